"""Loss normalisation and the training loop on a tiny model."""

import pytest
import torch
from accelerate import Accelerator

from sftlab.pack import collate_packed, collate_padded
from sftlab.train import accumulate_gradients
from helpers import random_rendered
from tiny import make_model


def grads_of(model, batches):
    model.zero_grad(set_to_none=True)
    loss, n, _ = accumulate_gradients(model, batches, Accelerator(cpu=True))
    return loss, n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_one_batch_of_8_equals_8_accumulated_batches_of_1(layout):
    exs = random_rendered(8, seed=5)  # lengths differ: a mean of per-batch means would NOT match
    model = make_model()
    if layout == "padded":
        big, small = [collate_padded(exs, 0)], [collate_padded([r], 0) for r in exs]
    else:
        big, small = [collate_packed(exs)], [collate_packed([r]) for r in exs]
    loss_a, n_a, ga = grads_of(model, big)
    loss_b, n_b, gb = grads_of(model, small)
    assert n_a == n_b == sum(sum(r.loss_mask[1:]) for r in exs)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-6, rtol=1e-4)


def test_mean_of_means_would_differ():
    """The check above can fail: weighting micro-batches equally gives other gradients."""
    exs = random_rendered(8, seed=5)
    model = make_model()
    _, _, ga = grads_of(model, [collate_packed(exs)])
    model.zero_grad(set_to_none=True)
    from sftlab.loss import summed_loss

    for r in exs:
        b = collate_packed([r])
        loss, n = summed_loss(model, b)
        (loss / n / len(exs)).backward()
    diffs = [float((ga[k] - p.grad).abs().max()) for k, p in model.named_parameters()]
    assert max(diffs) > 1e-4


def test_a_checkpoint_of_the_flat_speed_keys_era_is_named_as_such_not_as_changed_keys():
    """Saved before train.speed existed (train.fused_lora, ..., loss_chunk_tokens hashed): the refusal
    says no key that changes the result differs, instead of listing the moved speed keys."""
    from sftlab.train import describe_config_change

    new = {"train": {"lr": 1e-4, "output_dir": "b", "speed": {"fused_lora": True, "cpu_matmul": "auto", "loss_chunk_tokens": "auto"}}}
    old = {"train": {"lr": 1e-4, "output_dir": "a", "fused_lora": True, "cpu_matmul": "auto", "loss_chunk_tokens": None}}
    said = describe_config_change(old, new, "aaaa", "bbbb")
    assert "no key that changes the result differs" in said and "--force-resume" in said and ":\n" not in said, "no key listed"
    old["train"]["lr"] = 2e-4
    assert describe_config_change(old, new, "aaaa", "bbbb") == ":\n    train.lr: 0.0002 -> 0.0001"
