"""Run a curation pipeline: read inputs -> blocks in order -> JSONL out + JSON stats.

Rows stream from the loader through the blocks into the output file; only blocks that need the
whole set (select, mix, curriculum) hold rows in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sftlab.atomic import atomic_write_json
from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockStats
from sftlab.curate.config import CurateConfig
from sftlab.curate.mix import Mix, MixReport


@dataclass
class CurateResult:
    written: int
    output: str
    stats_path: str
    blocks: list[BlockStats]
    load: dict[str, Any] = field(default_factory=dict)  # per input: loaded, skipped by reason

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "output": self.output, "load": self.load,
                "blocks": [b.to_json() for b in self.blocks]}

    def table(self) -> str:
        rows = [("block", "seen", "kept", "dropped", "dropped by reason")]
        for name, info in self.load.items():
            skipped = info.get("skipped") or {}
            rows.append((f"load {name}", str(info["rows_read"]), str(info["loaded"]), str(sum(skipped.values())),
                         ", ".join(f"{k} {v}" for k, v in skipped.items())))
        for b in self.blocks:
            reasons = ", ".join(f"{r} {n:,}" for r, n in b.dropped_by_reason.most_common())
            rows.append((b.name, f"{b.seen:,}", f"{b.kept:,}", f"{b.dropped:,}", reasons))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:4], widths)))
                 + "  " + r[4] for r in rows]
        lines.insert(1, "-" * (sum(widths) + 8 + len(rows[0][4])))
        for b in self.blocks:
            if "per_source" in b.notes:
                lines += ["", f"{b.name}: per source", MixReport(b.notes["per_source"], b.kept).table()]
        lines.append(f"wrote {self.written:,} conversations to {self.output}; stats in {self.stats_path}")
        return "\n".join(lines)


def build_blocks(cfg: CurateConfig) -> list[Block]:
    weights = {i.display_name(): i.weight for i in cfg.inputs}
    blocks = []
    for spec in cfg.blocks:
        blocks.append(Mix(spec, default_weights=weights) if spec.type == "mix" else spec.build())
    return blocks


def apply_blocks(conversations: Iterable[Conversation], blocks: list[Block]) -> Iterator[Conversation]:
    stream: Iterable[Conversation] = conversations
    for block in blocks:
        stream = block(stream)
    yield from stream


def _read_inputs(cfg: CurateConfig, load_info: dict[str, Any]) -> Iterator[Conversation]:
    from sftlab.data import iter_conversations

    for inp in cfg.inputs:
        name = inp.display_name()
        stream = iter_conversations(inp.path, **inp.load_kwargs(), on_error=cfg.on_error)
        for conv in stream:
            yield conv.with_meta(source_name=name)
        s = stream.stats
        load_info[name] = {"path": inp.path, "rows_read": s.rows_read, "loaded": s.loaded, "skipped": dict(s.skipped)}


def run_pipeline(cfg: CurateConfig) -> CurateResult:
    """Run `cfg` (paths already resolved, see load_curate_config) and write output + stats."""
    from sftlab.data import save_conversations

    blocks = build_blocks(cfg)
    load_info: dict[str, Any] = {}
    written = save_conversations(apply_blocks(_read_inputs(cfg, load_info), blocks), cfg.output)
    result = CurateResult(written, cfg.output, cfg.stats or cfg.output + ".stats.json", [b.stats for b in blocks],
                          load_info)
    atomic_write_json(result.stats_path, result.to_json())
    return result
