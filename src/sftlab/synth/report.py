"""What a synth run did: rows made, rows already there, rejections by reason, failed calls."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SynthReport:
    pipeline: str
    output: str
    rows_total: int = 0  # rows in the output now
    rows_new: int = 0  # written by this run
    rows_resumed: int = 0  # already there when this run started
    truncated_bytes: int = 0  # partial last line from a killed run, removed
    rejected: dict[str, int] = field(default_factory=dict)  # all runs together (from the state file)
    failed_calls: int = 0  # teacher/judge calls that failed after all retries, all runs together
    call_stats: dict = field(default_factory=dict)  # this run's backend stats
    finished: bool = True
    note: str = ""

    def summary(self) -> str:
        lines = [f"{self.pipeline}: {self.rows_total} rows in {self.output} ({self.rows_new} new, {self.rows_resumed} from earlier runs)"]
        if self.truncated_bytes:
            lines.append(f"  removed a partial last line ({self.truncated_bytes} bytes) left by a killed run")
        if self.rejected:
            total = sum(self.rejected.values())
            lines.append(f"  rejected {total}: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items(), key=lambda kv: -kv[1])))
        lines.append(f"  failed calls (after retries): {self.failed_calls}")
        if self.call_stats:
            lines.append("  this run: " + ", ".join(f"{k} {v}" for k, v in self.call_stats.items() if k != "errors"))
            if self.call_stats.get("errors"):
                lines.append(f"  failure reasons: {self.call_stats['errors']}")
        if not self.finished:
            lines.append(f"  NOT FINISHED: {self.note}")
        elif self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def fill(self, n_rows: int, state, *backends) -> None:
        self.rows_total = n_rows
        self.rejected = dict(state.data.get("rejected", {}))
        self.failed_calls = state.data.get("failed_calls", 0)
        stats = [b.stats.to_dict() for b in backends]
        self.call_stats = stats[0] if len(stats) == 1 else {f"backend{i}": s for i, s in enumerate(stats)}

    def to_dict(self) -> dict:
        return asdict(self)
