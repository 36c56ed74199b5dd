"""How much of a run's CPU time the hypervisor took away (`steal` in /proc/stat).

On shared cloud hosts the same 20-step quickstart took 4.4 min of training on a quiet machine and 6.9 min when
top showed ~33% steal: a wall time means little without it. Linux only; elsewhere the meter reports None.
"""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int] | None:
    """(steal jiffies, all jiffies) of the aggregate `cpu` line, or None where /proc/stat is missing or odd."""
    try:
        first = PROC_STAT.read_text().split("\n", 1)[0].split()
        # cpu user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is already in user
        values = [int(x) for x in first[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    if first[0] != "cpu" or len(values) < 8:
        return None
    return values[7], sum(values)


class StealMeter:
    """Share of the CPU's time stolen by the host between construction and `fraction()`."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def fraction(self) -> float | None:
        end = _cpu_times()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        return (end[0] - self.start[0]) / (end[1] - self.start[1])

    def note(self) -> str:
        """'; CPU steal 24% (a busy shared host: wall times are inflated)' or '' when unknown or under 5%."""
        f = self.fraction()
        if f is None or f < 0.05:
            return ""
        return f"; the host took {f:.0%} of the CPU time (steal): wall times are inflated"
