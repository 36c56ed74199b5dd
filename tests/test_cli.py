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


def test_quickstart_long_is_the_quickstart_with_more_steps(capsys):
    """The long recipe differs from the quickstart only where its comments say so (read as plain YAML, not
    through sftlab's config loader), and --long with --vision is refused before anything loads."""
    import yaml

    from sftlab.config import load_config
    from sftlab.configs import quickstart_config_path, shipped_config

    short = yaml.safe_load(quickstart_config_path().read_text())
    long = yaml.safe_load(shipped_config("quickstart-long").read_text())
    assert {k: v for k, v in long["train"].items() if k not in ("max_steps", "output_dir", "save_every")} == \
        {k: v for k, v in short["train"].items() if k not in ("max_steps", "output_dir", "save_every")}
    assert {k: v for k, v in long.items() if k != "train"} == {k: v for k, v in short.items() if k != "train"}
    assert long["train"]["max_steps"] >= 4 * short["train"]["max_steps"]  # the stronger recipe: the same, longer
    assert load_config(shipped_config("quickstart-long")).train.output_dir == "runs/quickstart-long"
    with pytest.raises(SystemExit) as e:
        main(["quickstart", "--long", "--vision"])
    assert "pick one" in str(e.value)


def test_quickstart_vision_encoder_reaches_stage_one_only(monkeypatch):
    """--vision-encoder becomes stage 1's multimodal.vision_encoder (stage 2 starts from stage 1's model);
    without --vision it is refused."""
    import sftlab.multimodal.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out, **kw: seen.update(kw, out=out))
    assert main(["quickstart", "--vision", "--vision-encoder", "builtin:tiny-siglip-shapes", "--seed", "2"]) == 0
    assert seen["stage1_overrides"] == ["multimodal.vision_encoder=builtin:tiny-siglip-shapes"]
    assert seen["seed"] == 2 and seen["out"] == "runs/vlm-quickstart" and "stage2_overrides" not in seen
    seen.clear()
    assert main(["quickstart", "--vision"]) == 0 and seen["stage1_overrides"] == []
    with pytest.raises(SystemExit) as e:
        main(["quickstart", "--vision-encoder", "builtin:tiny-siglip-shapes"])
    assert "--vision only" in str(e.value)


def test_quickstart_seed_is_the_training_seed(monkeypatch, tmp_path):
    """--seed on the text quickstart becomes train.seed (another independent run of the same recipe)."""
    import sftlab.train

    got = []

    def fake_train(cfg, **kw):
        got.append(cfg)
        raise SystemExit("stop here")

    monkeypatch.setattr(sftlab.train, "train", fake_train)
    for argv, seed in ((["--seed", "2"], 2), ([], 0)):
        with pytest.raises(SystemExit, match="stop here"):
            main(["quickstart", "--out", str(tmp_path / f"q{seed}"), *argv])
    assert [c.train.seed for c in got] == [2, 0]
