"""Every subcommand registers and prints its help (argparse errors surface only at --help time)."""

import pytest

from sftlab.cli import build_parser, main


def test_all_commands_have_working_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)
    assert {"train", "data", "quickstart", "eval", "chat", "serve", "export", "curate", "synth", "judge"} <= names
    for name in sorted(names):
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
    assert "usage: sftlab" in capsys.readouterr().out


def test_missing_config_is_a_clean_error(capsys, tmp_path):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_config_reference_is_up_to_date():
    """docs/config.md is generated from the pydantic models; regenerate: python -m sftlab.config > docs/config.md"""
    from pathlib import Path

    from sftlab.config import reference_markdown

    doc = Path(__file__).parent.parent / "docs" / "config.md"
    assert doc.read_text().strip() == reference_markdown().strip()
