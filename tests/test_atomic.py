"""sftlab.atomic: a file or folder appears whole or not at all, and no temporary is left behind."""

import pytest

from sftlab.atomic import AtomicFile, atomic_dir, atomic_write, atomic_write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with AtomicFile(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    atomic_write_json(path, {"x": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "x": "é"\n}'


def test_atomic_dir_renames_on_success_and_keeps_a_concurrent_winner(tmp_path):
    target = tmp_path / "entry"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("1")
    assert (target / "f").read_text() == "1"
    with atomic_dir(target, replace=False) as tmp:  # another process stored the same entry first
        (tmp / "f").write_text("2")
    assert (target / "f").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["entry"]
    with pytest.raises(ValueError), atomic_dir(tmp_path / "other", prefix=".tmp-x-") as tmp:
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
