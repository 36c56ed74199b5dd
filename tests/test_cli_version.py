"""`sftlab --version` prints the installed version."""

from importlib.metadata import version

import pytest

from sftlab.cli import main


def test_version_flag_prints_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sftlab {version('sftlab')}"
