"""Evaluation during training (train_eval.py): eval_generate accuracy, the best checkpoint by
train.best_metric (final/ made from it, kept across resume), early stopping with patience, and
experiment tracking (tracking.py: TensorBoard read back from its event files)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sftlab.config import load_config
from sftlab.errors import ConfigError, SftlabError
from sftlab.train import train
from helpers import WORDS, final_weights, run_config, write_data

# training teaches "Reverse the word X." -> the reversed word; this eval set answers the same prompts
# otherwise, so its loss falls while the model learns the format, then rises as it learns the task
UNLIKE_TRAIN = [{"messages": [{"role": "user", "content": f"Reverse the word {w}."}, {"role": "assistant", "content": f"{w.upper()} {w}"}]}
                for w in WORDS]
# a task the tiny model answers right after a step or two: a constant answer
YES_TRAIN = [{"messages": [{"role": "user", "content": f"Is {w} a word?"}, {"role": "assistant", "content": "yes"}]} for w in WORDS * 2]
YES_EVAL = [{"messages": [{"role": "user", "content": f"Is {w} a word?"}, {"role": "assistant", "content": "Yes."}]}
            for w in ("fox", "cat", "hat", "jumps")]


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def early_stop_config(tmp_path: Path, out: str, **train) -> dict:
    write_data(tmp_path / "data" / "unlike.jsonl", UNLIKE_TRAIN)
    cfg = run_config(tmp_path, out=out, max_steps=30, eval_every=1, save_every=0, best_metric="eval_loss",
                     early_stopping_patience=3, **train)
    cfg["data"]["eval"] = [{"path": str(tmp_path / "data" / "unlike.jsonl")}]
    cfg["train"]["speed"] = {"cpu_matmul": "torch"}  # the same kernels in every run compared here
    return cfg


def checkpoint_weights(run: Path, step: int) -> dict:
    return load_file(str(run / f"checkpoint-{step:07d}" / "trainable.safetensors"))


def test_early_stopping_saves_final_from_the_best_checkpoint(tmp_path):
    cfg = early_stop_config(tmp_path, "run")
    run = Path(cfg["train"]["output_dir"])
    result = train(load_config(cfg))
    lines = metrics(run)
    evals = [(m["step"], m["eval_loss"]) for m in lines]
    best_step, best_value = min(evals, key=lambda e: (e[1], e[0]))
    # a planned stop: not a failure (stopped_early stays empty), fewer steps than asked, final/ saved
    assert result.early_stopped.startswith(f"early stopping after step {result.steps}") and not result.stopped_early
    assert result.steps < 30 and (run / "final" / "model.safetensors").is_file()
    # it stopped exactly `patience` evaluations after the best, none of which improved on it
    assert result.steps == best_step + 3 and all(v > best_value for s, v in evals if s > best_step)
    best = json.loads((run / "run.json").read_text())["result"]["best"]
    assert (best["step"], best["value"], best["metric"], best["mode"]) == (best_step, best_value, "eval_loss", "min")
    assert best["final_from_step"] == best_step < best["last_step"] == result.steps and "lowest" in best["why"]
    assert result.eval_loss == best_value  # the eval loss of what final/ holds
    # the best checkpoint is kept besides the rolling ones, and final/ holds exactly its weights
    kept = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))
    assert best_step in kept and result.steps in kept
    assert len([s for s in kept if s != best_step]) <= 2  # keep_checkpoints: 2
    ckpt, final = checkpoint_weights(run, best_step), final_weights(run)
    assert ckpt.keys() <= final.keys()
    assert all(torch.equal(ckpt[n], final[n]) for n in ckpt)
    assert not all(torch.equal(checkpoint_weights(run, result.steps)[n], final[n]) for n in ckpt)
    # resuming a run that stopped early: finished, nothing to do
    again = train(load_config(cfg), resume=True)
    assert again.steps == result.steps and metrics(run) == lines
    assert again.best == result.best and again.early_stopped == result.early_stopped


def test_best_and_patience_survive_resume(tmp_path):
    """Interrupted (SIGINT) after the best and one evaluation without improvement, then resumed: the same
    stop, the same best step, the same final weights as the unbroken run."""
    from tiny import hook_training_forwards, make_model, make_tokenizer

    ref_cfg = early_stop_config(tmp_path, "unbroken")
    ref = train(load_config(ref_cfg))
    best_step = ref.best["step"]
    stop_at = best_step + 1  # inside the patience window: the resumed run must remember both counters
    cfg = early_stop_config(tmp_path, "stopped")
    run = Path(cfg["train"]["output_dir"])
    model = make_model()
    handle = hook_training_forwards(model, lambda out, k: os.kill(os.getpid(), signal.SIGINT) if k == stop_at else None)
    first = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    handle.remove()
    assert first.stopped_early.startswith(f"stopped by SIGINT after step {stop_at}") and not (run / "final").exists()
    saved = json.loads((run / f"checkpoint-{stop_at:07d}" / "meta.json").read_text())["evaluation"]
    assert (saved["step"], saved["evals_since"]) == (best_step, 1)
    result = train(load_config(cfg), resume=True)
    assert (result.steps, result.best["step"], result.early_stopped) == (ref.steps, best_step, ref.early_stopped)
    assert metrics(run)[-1]["eval_loss"] == metrics(Path(ref_cfg["train"]["output_dir"]))[-1]["eval_loss"]
    a, b = final_weights(run), final_weights(Path(ref_cfg["train"]["output_dir"]))
    assert all(torch.equal(a[n], b[n]) for n in a)


def independent_accuracy(model, tokenizer, rows) -> float:
    """Greedy answers one prompt at a time through the tokenizer's own chat template and model.generate,
    compared with the gold answer (case, spaces and a trailing period ignored)."""
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    right = 0
    for r in rows:
        ids = tokenizer.apply_chat_template(r["messages"][:1], add_generation_prompt=True, tokenize=True, return_dict=False)
        ids = torch.tensor([list(ids)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                                 eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        out = out[: out.index(stop)] if stop in out else out
        norm = lambda s: s.strip().rstrip(".").strip().lower()  # noqa: E731
        right += norm(tokenizer.decode(out, skip_special_tokens=True)) == norm(r["messages"][1]["content"])
    return right / len(rows)


def test_eval_accuracy_matches_an_independent_grading_and_picks_the_best(tmp_path):
    from tiny import make_model, make_tokenizer

    write_data(tmp_path / "data" / "train.jsonl", YES_TRAIN)
    gen = write_data(tmp_path / "data" / "gen.jsonl", YES_EVAL)
    cfg = run_config(tmp_path, max_steps=4, eval_every=1, save_every=1, keep_checkpoints=10, best_metric="eval_accuracy",
                     eval_generate={"source": str(gen), "limit": 4, "max_new_tokens": 4})
    cfg["train"]["speed"] = {"cpu_matmul": "torch"}
    run = Path(cfg["train"]["output_dir"])
    result = train(load_config(cfg))
    accs = [(m["step"], m["eval_accuracy"]) for m in metrics(run)]
    assert [s for s, _ in accs] == [1, 2, 3, 4] and "eval_loss" not in metrics(run)[0]  # no eval data: accuracy only
    tok = make_tokenizer()
    for step, acc in accs:  # each logged value = the grading of that step's weights, computed apart
        model = make_model()
        model.load_state_dict(checkpoint_weights(run, step), strict=False)
        assert acc == independent_accuracy(model, tok, YES_EVAL), step
    assert len({a for _, a in accs}) > 1, "the accuracy moves during this run (else the test proves little)"
    best_step, best_value = max(accs, key=lambda e: (e[1], -e[0]))  # highest; the earliest of ties
    assert (result.best["step"], result.best["value"], result.best["mode"]) == (best_step, best_value, "max")
    assert result.eval_accuracy == best_value


def test_builtin_generation_set_spreads_over_families_and_uses_the_checkers():
    from sftlab.builtin.tasks import FAMILIES
    from sftlab.config import EvalGenerateConfig
    from sftlab.conversation import Conversation
    from sftlab.train_eval import GenerationEval, grade
    from tiny import make_tokenizer

    g = GenerationEval.load(EvalGenerateConfig(source="builtin:tasks-eval", limit=40), make_tokenizer())
    families = [c.meta["family"] for c in g.conversations]
    assert len(families) == 40 and len(set(families)) == min(40, len(FAMILIES))
    c = g.conversations[0]
    assert grade(c, c.meta["answer"]) and grade(c, f"Answer: {c.meta['answer']}") and not grade(c, "nonsense 123")
    plain = Conversation.from_messages([{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}])
    assert grade(plain, ' "paris". ') and not grade(plain, "Lyon")


def test_best_bookkeeping_direction_min_delta_and_patience():
    from sftlab.config import TrainConfig
    from sftlab.train_eval import TrainEval

    ev = TrainEval(TrainConfig(eval_every=1, best_metric="eval_accuracy", early_stopping_patience=2, early_stopping_min_delta=0.05))
    assert ev.observe(1, {"eval_accuracy": 0.5}) and ev.protected() == {1}
    assert not ev.observe(2, {"eval_accuracy": 0.54})  # within min_delta: no improvement
    assert ev.observe(3, {"eval_accuracy": 0.6}) and ev.best.evals_since == 0 and ev.protected() == {3}
    saved = ev.state()
    assert not ev.observe(4, {"eval_accuracy": 0.6}) and not ev.stop_reason
    assert not ev.observe(5, {"eval_accuracy": 0.1}) and "did not improve on 0.6 (step 3) for 2 evaluations" in ev.stop_reason
    again = TrainEval(ev.tc)
    again.restore(saved)
    assert (again.best.value, again.best.step, again.best.evals_since, again.stop_reason) == (0.6, 3, 0, "")
    loss = TrainEval(TrainConfig(eval_every=5, best_metric="eval_loss"))
    assert loss.observe(5, {"eval_loss": 2.0}) and loss.observe(10, {"eval_loss": 1.9}) and not loss.observe(15, {"eval_loss": 1.9})
    assert loss.due(10, 12) and loss.due(12, 12) and not loss.due(11, 12)  # the last step is evaluated too
    with pytest.raises(SftlabError, match="eval_loss is None"):
        loss.observe(20, {})


def test_evaluation_keys_are_checked_together(tmp_path):
    cfg = run_config(tmp_path, best_metric="eval_accuracy", early_stopping_patience=2)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "needs evaluations during training; set train.eval_every" in msg and "needs train.eval_generate" in msg
    with pytest.raises(ConfigError, match="early_stopping_patience counts evaluations .* set train.best_metric"):
        load_config(run_config(tmp_path, eval_every=2, early_stopping_patience=2))
    with pytest.raises(ConfigError, match="eval_loss needs eval data"):
        load_config(run_config(tmp_path, eval_every=2, best_metric="eval_loss"))


def test_fingerprint_ignores_trackers_and_unset_keys_but_not_best_metric(tmp_path):
    base = run_config(tmp_path, eval_every=2)
    base["data"]["eval_fraction"] = 0.2
    fp = load_config(base).fingerprint()
    assert load_config(base, ["train.report_to=[tensorboard]"]).fingerprint() == fp
    assert load_config(base, ["train.eval_generate={limit: 8}"]).fingerprint() == fp  # reporting only
    assert load_config(base, ["train.best_metric=eval_loss"]).fingerprint() != fp
    assert load_config(base, ["train.early_stopping_min_delta=0.0"]).fingerprint() == fp


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra; in the `test` extra, so CI runs this
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = run_config(tmp_path, max_steps=4, eval_every=2, save_every=0, report_to=["tensorboard"])
    cfg["data"]["eval_fraction"] = 0.2
    run = Path(cfg["train"]["output_dir"])
    train(load_config(cfg))
    events = EventAccumulator(str(run / "tracking" / "sftlab"))
    events.Reload()
    lines = metrics(run)
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        want = [(m["step"], m[key]) for m in lines if m.get(key) is not None]
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key  # TensorBoard keeps float32
    assert [s for s, _ in ((e.step, e.value) for e in events.Scalars("eval_loss"))] == [2, 4]
    # the tracking folder counts as the run's own output: --overwrite replaces it
    train(load_config(cfg), overwrite=True)


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_a_clear_error(tmp_path, monkeypatch, tracker):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    cfg = run_config(tmp_path, report_to=["tensorboard", tracker])
    with pytest.raises(SftlabError, match=rf"train.report_to: {tracker} is not installed .* pip install 'sftlab\[{tracker}\]'"):
        train(load_config(cfg))
    assert not (tmp_path / "run").exists(), "refused before anything was written"
    from sftlab.dry_run import dry_run

    report = dry_run(load_config(cfg))
    assert report.exit_code == 2 and any(f"pip install 'sftlab[{tracker}]'" in p for p in report.problems)
