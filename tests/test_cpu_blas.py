"""OpenBLAS products (sftlab.speed.cpu_blas) equal torch's: the split matmul itself, the LoRA linear and
SwiGLU down projection autograd functions, the chunked lm_head + cross-entropy, and a training
run; plus the choice of `train.speed.cpu_matmul` (made once per run: a resume reuses it) and the BLAS
thread limit being put back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info

from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.pack import collate_packed
from sftlab.speed import cpu_blas
from sftlab.speed.chunked_loss import chunked_linear_cross_entropy
from sftlab.speed.fused_lora import fuse_lora_layers
from sftlab.speed.fused_mlp import fuse_mlp_layers
from sftlab.train import train
from test_fused_lora import _lora, _run
from test_fused_mlp import _assert_same
from helpers import final_weights, losses, random_rendered, run_config
from tiny import hook_training_forwards, make_model, make_tokenizer


@pytest.fixture
def np_calls(monkeypatch):
    """Counts numpy matmuls, so each test shows the OpenBLAS path really ran."""
    calls = []
    real = np.matmul

    def counting(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(np, "matmul", counting)
    return calls


def _openblas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas"]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matmul_equals_torch_for_splits_transposes_and_out(threads, np_calls, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 48, generator=g), torch.randn(96, 48, generator=g)
    with cpu_blas.blas_matmuls(True):
        got = cpu_blas.matmul(a, b.t())  # a transposed (non-contiguous) right operand
        got_t = cpu_blas.matmul(a.t(), torch.randn(200, 40, generator=g))  # transposed left operand
        out = torch.empty(200, 96)
        same = cpu_blas.matmul(a, b.t(), out=out)
        small = cpu_blas.matmul(a[:10], b.t())  # too few rows to split
        lin = cpu_blas.linear(a, b, torch.ones(96))
    torch.testing.assert_close(got, a @ b.t(), atol=1e-4, rtol=1e-5)
    assert got_t.shape == (48, 40)
    assert same.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, a @ b.t(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(small, a[:10] @ b.t(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lin, F.linear(a, b, torch.ones(96)), atol=1e-4, rtol=1e-5)
    parts = min(threads, 200 // cpu_blas.MIN_ROWS_PER_THREAD)
    # the first product ran as `parts` row blocks (pool threads finish in any order)
    assert sorted(s[0] for s in np_calls[:parts]) == sorted(200 * (i + 1) // parts - 200 * i // parts for i in range(parts))
    assert (10, 48) in np_calls, "a small product runs as one call"


def test_outside_the_block_and_for_other_dtypes_torch_does_the_product(np_calls):
    a = torch.randn(64, 8)
    cpu_blas.matmul(a, a.t())
    with cpu_blas.blas_matmuls(True):
        cpu_blas.matmul(a.double(), a.double().t())
    with cpu_blas.blas_matmuls(False):
        cpu_blas.matmul(a, a.t())
    assert np_calls == []


def test_blas_threads_are_limited_inside_and_restored_after():
    before = _openblas_threads()
    assert before, "numpy's wheel links OpenBLAS"
    with cpu_blas.blas_matmuls(True):
        assert set(_openblas_threads()) == {1}
        assert cpu_blas.active()
    assert _openblas_threads() == before and not cpu_blas.active()


@pytest.mark.parametrize("lora", [True, False])
def test_lora_linears_and_swiglu_down_under_openblas_equal_the_library(lora, np_calls):
    """LoRA model: every linear is a LoRA layer (_LoraLinear) and down_proj runs inside _SwiGLUDown;
    full fine-tuning: down_proj's weight gradient goes through OpenBLAS. Reference: peft's / the
    library's own forward with torch products."""
    model = _lora() if lora else make_model(seed=0)
    model.train()
    batch = collate_packed(random_rendered(6, seed=3))
    assert batch.input_ids.numel() >= 2 * cpu_blas.MIN_ROWS_PER_THREAD, "enough rows to split"
    ref = _run(model, batch)
    if lora:
        fuse_lora_layers(model)
    fuse_mlp_layers(model)
    with cpu_blas.blas_matmuls(True):
        got = _run(model, batch)
    _assert_same(got, ref)
    rows = batch.input_ids.numel()
    assert np_calls and any(s[0] < rows for s in np_calls), "products were split over threads"


def test_chunked_cross_entropy_under_openblas_equals_torch(np_calls):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(70, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (70,), generator=g)
    ref = F.cross_entropy(h @ w.t(), t, reduction="sum")
    ref.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with cpu_blas.blas_matmuls(True):
        got = chunked_linear_cross_entropy(h, w, None, t, 64)
    got.backward()
    assert np_calls
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(h.grad, gh, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.grad, gw, atol=1e-5, rtol=1e-4)


def test_decide(monkeypatch):
    model = make_model()
    assert cpu_blas.decide("auto", model, torch.device("cuda")) == (False, "")
    assert cpu_blas.decide("torch", model, torch.device("cpu"))[0] is False
    assert cpu_blas.decide("openblas", model, torch.device("cpu"))[0] is True
    use, why = cpu_blas.decide("auto", model, torch.device("cpu"))
    assert "GFLOP/s" in why and use == cpu_blas.calibration()["use"] == cpu_blas.choose(1, 1)["use"], \
        "calibrated once per process"
    with pytest.raises(SftlabError, match="fp32"):
        cpu_blas.decide("openblas", make_model().double(), torch.device("cpu"))
    assert cpu_blas.decide("auto", make_model().double(), torch.device("cpu"))[0] is False
    monkeypatch.setattr(cpu_blas, "_unavailable", lambda: "numpy is not linked to OpenBLAS")
    with pytest.raises(SftlabError, match="not linked to OpenBLAS"):
        cpu_blas.decide("openblas", model, torch.device("cpu"))


@pytest.mark.parametrize("lora", [True, False])
def test_training_with_openblas_gives_the_torch_losses(tmp_path, lora, np_calls):
    extra = {"lora": {"enabled": True, "r": 4}} if lora else {}
    runs = {}
    for mode in ("torch", "openblas"):
        cfg = run_config(tmp_path, out=mode, max_steps=4, save_every=0, speed={"cpu_matmul": mode})
        cfg.update(extra)
        train(load_config(cfg))
        runs[mode] = losses(tmp_path / mode)
        assert bool(np_calls) == (mode == "openblas")
    assert [s for s, _ in runs["torch"]] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(runs["torch"], runs["openblas"]):
        assert abs(a - b) < 1e-4 * max(1.0, abs(a))


def test_resume_reuses_the_kernels_chosen_at_the_start_and_ends_bit_identical(tmp_path, monkeypatch, capsys):
    """`cpu_matmul: auto` times the kernels once, at the run's start; the checkpoint records the
    choice. A resumed run whose calibration would now answer the other way (another machine, a
    loaded one) still computes with the recorded kernels, so it ends bit-identical to an unbroken run."""
    import json
    import os
    import signal

    def calibration_says(use: bool):
        monkeypatch.setattr(cpu_blas, "choose", lambda *a, **k: {"use": use, "torch_gflops": 1.0, "openblas_gflops": 2.0 if use else 0.5,
                                                                  "reason": f"test calibration: use OpenBLAS = {use}"})

    calibration_says(True)
    reference = run_config(tmp_path, out="unbroken", max_steps=6, save_every=0)
    train(load_config(reference))
    cfg = run_config(tmp_path, out="stopped", max_steps=6, save_every=0)
    model = make_model()
    handle = hook_training_forwards(model, lambda out, k: os.kill(os.getpid(), signal.SIGINT) if k == 3 else None)
    first = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    handle.remove()
    assert first.stopped_early.startswith("stopped by SIGINT after step 3")
    meta = json.loads((tmp_path / "stopped" / "checkpoint-0000003" / "meta.json").read_text())
    assert meta["speed"] == {"cpu_matmul": "openblas"}

    calibration_says(False)  # a fresh decision now would take torch's kernels
    capsys.readouterr()
    train(load_config(cfg), resume=True)
    got, ref = final_weights(tmp_path / "stopped"), final_weights(tmp_path / "unbroken")
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), "bit-identical to the unbroken run"
    assert losses(tmp_path / "stopped") == losses(tmp_path / "unbroken")
    assert "cpu matmul: OpenBLAS (chosen at the run's start, recorded in the checkpoint" in capsys.readouterr().out

    # the check has teeth: with torch's kernels the same run ends on other bits
    other = run_config(tmp_path, out="torch", max_steps=6, save_every=0)
    train(load_config(other))
    torch_weights = final_weights(tmp_path / "torch")
    assert any(not torch.equal(torch_weights[k], ref[k]) for k in ref)


@pytest.mark.parametrize("preset", [None, "50"])
@pytest.mark.parametrize("first", ["sftlab", "torch"])
def test_the_sftlab_command_sets_the_spin_count_before_torch_loads_unless_the_user_did(preset, first):
    """libgomp reads GOMP_SPINCOUNT once, when torch loads (cpu_blas.py): the `sftlab` command's module
    (sftlab.cli) sets it only while torch is not loaded (setting it later would claim an effect it
    cannot have); `import sftlab` alone changes nothing; configure_openmp() says whether it could act."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | ({"GOMP_SPINCOUNT": preset} if preset else {})
    code = (f"import os, {first}, sftlab, sftlab.speed; print('PLAIN', os.environ.get('GOMP_SPINCOUNT')); import sftlab.cli; "
            "print('SPIN', os.environ.get('GOMP_SPINCOUNT')); import torch; print('LATE', sftlab.speed.configure_openmp())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    expected = preset or ("1000" if first == "sftlab" else None)
    assert f"PLAIN {preset}" in out and f"SPIN {expected}" in out and "LATE False" in out


def test_under_cpu_autocast_the_products_stay_with_torch(np_calls):
    """bf16 autocast: the LoRA layers take the torch path (bf16 products), as without OpenBLAS."""
    model = _lora()
    model.train()
    fuse_lora_layers(model)
    fuse_mlp_layers(model)
    batch = collate_packed(random_rendered(4, seed=5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(**batch.model_inputs()).logits
        with cpu_blas.blas_matmuls(True):
            got = model(**batch.model_inputs()).logits
    assert np_calls == [] and got.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref)
