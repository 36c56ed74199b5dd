"""train.kl_to_base: CE + beta * KL(tuned || base) against a direct full-logits computation."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from sftlab.kl import KLToBase, reference_copy
from sftlab.loss import summed_loss
from sftlab.model import add_lora
from sftlab.pack import collate_packed
from sftlab.train import accumulate_gradients
from helpers import random_rendered, run_config
from tiny import make_model


def lora_model(seed=0):
    model = add_lora(make_model(seed=seed), 4, 8, 0.0, "all-linear")
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():  # LoRA B starts at 0 (tuned == base): move it away
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.2
    return model


def full_model():
    model = make_model(seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def direct(tuned, base, exs, beta):
    """Independent: each example alone, full logits of two separate models, classic shift, F.kl_div."""
    total, n, kl_total = 0.0, 0, 0.0
    for r in exs:
        ids = torch.tensor([r.input_ids])
        logits = tuned(input_ids=ids, use_cache=False).logits[0, :-1]
        with torch.no_grad():
            base_logits = base(input_ids=ids, use_cache=False).logits[0, :-1]
        trained = torch.tensor(r.loss_mask[1:]) == 1
        target = ids[0, 1:][trained]
        lp = F.log_softmax(logits[trained], -1)
        lq = F.log_softmax(base_logits[trained], -1)
        ce = F.nll_loss(lp, target, reduction="sum")
        kl = F.kl_div(lq, lp, log_target=True, reduction="sum")  # sum p (log p - log q)
        total = total + ce + beta * kl
        kl_total += float(kl)
        n += int(trained.sum())
    return total / n, kl_total / n


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def run_step(model, batches, loss_fn):
    model.zero_grad(set_to_none=True)
    loss, n, _ = accumulate_gradients(model, batches, Accelerator(cpu=True), loss_fn=loss_fn)
    return loss, n, grads(model)


@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.parametrize("chunk", [None, "auto", 3])
def test_loss_and_gradients_equal_a_direct_full_logits_computation(kind, chunk):
    exs = random_rendered(6, seed=3)
    beta = 0.5
    if kind == "lora":
        model = lora_model()
        base = copy.deepcopy(model)  # a second model: the deep copy, adapters off
        reference = None
    else:
        base = make_model(seed=0)
        model = full_model()
        reference = reference_copy(full_model())
        with torch.no_grad():  # the reference holds the base weights
            for p, q in zip(reference.parameters(), base.parameters()):
                p.copy_(q)
    kl = KLToBase(beta, reference, chunk)
    loss, n, got = run_step(model, [collate_packed(exs[:3]), collate_packed(exs[3:])], kl)
    assert kl.path == "chunked"
    model.zero_grad(set_to_none=True)
    if kind == "lora":
        with base.disable_adapter():
            want_loss, want_kl = direct(model, base, exs, beta)
    else:
        want_loss, want_kl = direct(model, base, exs, beta)
    want_loss.backward()
    want = grads(model)
    assert loss == pytest.approx(float(want_loss), rel=1e-5)
    assert float(kl.kl_sum) / n == pytest.approx(want_kl, rel=1e-4)
    assert want_kl > 1e-3  # the two distributions differ: the KL term is really tested
    assert got.keys() == want.keys() and got
    for k in got:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-4)
    if kind == "full":
        assert all(p.grad is None for p in reference.parameters())


def test_plain_fallback_where_the_head_is_not_a_plain_linear():
    """lm_head adapted by LoRA: no chunked path; the plain path gives the same numbers."""
    exs = random_rendered(4, seed=4)
    model = add_lora(make_model(seed=0), 4, 8, 0.0, ["q_proj", "lm_head"])
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape) * 0.2
    base = copy.deepcopy(model)
    kl = KLToBase(0.3, None, "auto")
    loss, n, got = run_step(model, [collate_packed(exs)], kl)
    assert kl.path == "plain"
    model.zero_grad(set_to_none=True)
    with base.disable_adapter():
        want_loss, _ = direct(model, base, exs, 0.3)
    want_loss.backward()
    assert loss == pytest.approx(float(want_loss), rel=1e-5)
    for k, g in grads(model).items():
        torch.testing.assert_close(got[k], g, atol=1e-6, rtol=1e-4)


def test_beta_zero_is_the_cross_entropy():
    exs = random_rendered(5, seed=6)
    model = lora_model()
    batches = [collate_packed(exs)]
    loss_a, _, ga = run_step(model, batches, summed_loss)
    loss_b, _, gb = run_step(model, batches, KLToBase(0.0, None, 4))
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-7, rtol=1e-5)


def test_batch_of_8_equals_8_accumulated_batches_of_1_with_kl():
    exs = random_rendered(8, seed=5)
    model = lora_model()
    kl = KLToBase(0.5, None, "auto")
    loss_a, n_a, ga = run_step(model, [collate_packed(exs)], kl)
    kl_a = float(kl.kl_sum)
    kl.reset()
    loss_b, n_b, gb = run_step(model, [collate_packed([r]) for r in exs], kl)
    assert n_a == n_b
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert kl_a == pytest.approx(float(kl.kl_sum), rel=1e-5) and kl_a > 0
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("lora", [True, False])
def test_training_logs_the_kl_term_and_beta_zero_trains_as_before(tmp_path, lora):
    from sftlab.config import load_config
    from sftlab.train import train

    def run(out, beta):
        cfg = run_config(tmp_path, out, max_steps=3, save_every=0, kl_to_base={"beta": beta})
        cfg["lora"] = {"enabled": lora, "r": 4, "alpha": 8}
        train(load_config(cfg))
        return [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    zero, off = run("zero", 0.0), run("off", 0.0)
    assert [r["loss"] for r in zero] == [r["loss"] for r in off]
    assert "kl_to_base" not in zero[0]
    with_kl = run("kl", 1.0)
    assert with_kl[0]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)  # step 1: tuned == base
    assert with_kl[-1]["kl_to_base"] > 0
    for r in with_kl:
        assert r["loss"] == pytest.approx(r["ce_loss"] + 1.0 * r["kl_to_base"], abs=2e-6)
    assert load_config(run_config(tmp_path, "x")).fingerprint() == load_config(
        run_config(tmp_path, "x", kl_to_base={"beta": 0.0})).fingerprint()
