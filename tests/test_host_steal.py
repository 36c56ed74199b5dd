"""The steal meter reads /proc/stat's aggregate cpu line; checked on hand-written snapshots."""

from __future__ import annotations

from sftlab import host_steal
from sftlab.host_steal import StealMeter


def _stat(steal: int, other: int) -> str:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    return f"cpu  {other} 0 0 0 0 0 0 {steal} 0 0\ncpu0 1 2 3\n"


def test_steal_fraction_is_the_stolen_share_of_the_interval(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(host_steal, "PROC_STAT", stat)
    stat.write_text(_stat(steal=100, other=900))
    meter = StealMeter()
    stat.write_text(_stat(steal=100 + 30, other=900 + 70))  # 30 of the next 100 jiffies stolen
    assert meter.fraction() == 0.3
    assert "30%" in meter.note()
    stat.write_text(_stat(steal=100 + 1, other=900 + 99))
    assert meter.fraction() == 0.01 and meter.note() == ""  # under 5%: not worth a word


def test_missing_or_odd_proc_stat_gives_none(tmp_path, monkeypatch):
    monkeypatch.setattr(host_steal, "PROC_STAT", tmp_path / "absent")
    assert StealMeter().fraction() is None and StealMeter().note() == ""
    odd = tmp_path / "odd"
    odd.write_text("intr 1 2 3\n")
    monkeypatch.setattr(host_steal, "PROC_STAT", odd)
    assert StealMeter().fraction() is None
