"""The memory-saving SwiGLU MLP (sftlab.speed.fused_mlp) equals the library's MLP in outputs and
gradients, keeps 2 instead of 4 [tokens, intermediate] tensors per layer, and falls back where
its down_proj path does not apply."""

from __future__ import annotations

import pytest
import torch

from sftlab.speed.fused_lora import fuse_lora_layers
from sftlab.speed.fused_mlp import fuse_mlp_layers, unfuse_mlp_layers
from sftlab.pack import collate_packed
from test_fused_lora import _lora, _run
from helpers import random_rendered
from tiny import make_model


def _model(lora: bool, dropout: float = 0.0, mlp_bias: bool = False):
    model = make_model(seed=0)
    if mlp_bias:  # the same model with biases in its MLP linears (config.mlp_bias)
        for layer in model.model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                lin.bias = torch.nn.Parameter(torch.randn(lin.out_features) * 0.1)
    if lora:
        model = _lora(dropout, base=model)
    model.train()
    return model


def _assert_same(got, ref):
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-4)
    assert got[1].keys() == ref[1].keys() and got[1]
    for k in ref[1]:
        torch.testing.assert_close(got[1][k], ref[1][k], atol=1e-6, rtol=1e-4, msg=k)


def _down_calls(model) -> list:
    calls = []
    for layer in model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers:
        layer.mlp.down_proj.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("lora,mlp_bias", [(True, False), (False, False), (False, True)])
def test_fused_mlp_equals_library_mlp(lora, mlp_bias):
    model = _model(lora, mlp_bias=mlp_bias)
    batch = collate_packed(random_rendered(4, seed=2))
    if lora:
        fuse_lora_layers(model)
    ref = _run(model, batch)
    assert fuse_mlp_layers(model) == 2
    calls = _down_calls(model)
    got = _run(model, batch)
    assert calls == [], "down_proj runs inside the fused function (never called as a module)"
    _assert_same(got, ref)
    if not lora:  # full fine-tuning: the down_proj weight (and bias) gradients come from the recomputed product
        assert any(k.endswith("down_proj.weight") for k in got[1])
    assert unfuse_mlp_layers(model) == 2
    assert all(type(layer.mlp).__name__ == "LlamaMLP" for layer in (model.get_base_model() if lora else model).model.layers)


def test_lora_dropout_falls_back_to_calling_down_proj():
    model = _model(True, dropout=0.1)
    batch = collate_packed(random_rendered(4, seed=3))
    ref = _run(model, batch)
    fuse_mlp_layers(model)
    calls = _down_calls(model)
    got = _run(model, batch)
    assert len(calls) == 2, "dropout on down_proj's adapter: the module itself runs"
    _assert_same(got, ref)


def test_inference_and_gradient_checkpointing_agree():
    model = _model(True)
    batch = collate_packed(random_rendered(4, seed=4))
    ref = _run(model, batch)
    with torch.no_grad():
        plain = model(**batch.model_inputs()).logits
    fuse_mlp_layers(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch.model_inputs()).logits, plain)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    _assert_same(_run(model, batch), ref)


def _kept_intermediate_tensors(model, batch) -> int:
    """Distinct storages of shape [..., intermediate] that autograd keeps for the backward."""
    tokens_x_inter = batch.input_ids.numel() * model.config.intermediate_size  # activations, not weights
    seen = set()

    def pack(t):
        if t.numel() == tokens_x_inter:
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(**batch.model_inputs()).logits
    logits.float().square().mean().backward()
    return len(seen)


@pytest.mark.parametrize("lora", [True, False])
def test_fused_mlp_keeps_half_the_intermediate_activations(lora):
    model = _model(lora)
    if lora:
        fuse_lora_layers(model)
    batch = collate_packed(random_rendered(4, seed=5))
    before = _kept_intermediate_tensors(model, batch)
    fuse_mlp_layers(model)
    after = _kept_intermediate_tensors(model, batch)
    # library: gate(x), up(x), silu(gate(x)) and the product, per layer; fused: gate(x) and up(x)
    assert (before, after) == (8, 4)


def test_swiglu_down_keeps_the_inputs_device():
    """Outputs and gradients are made on the inputs' device (a GPU run must not get CPU tensors);
    checked on the meta device, which any stray CPU allocation mixes with and fails."""
    from sftlab.speed.fused_lora import _LoraLinear
    from sftlab.speed.fused_mlp import _SwiGLUDown

    def meta(*shape):
        return torch.empty(*shape, device="meta", requires_grad=True)

    g, u, w, a, b = meta(2, 5, 8), meta(2, 5, 8), meta(4, 8), meta(3, 8), meta(4, 3)
    out = _SwiGLUDown.apply(g, u, w, None, a, b, 2.0)
    out.sum().backward()
    assert out.device.type == "meta" and out.shape == (2, 5, 4)
    assert all(t.grad is not None and t.grad.device.type == "meta" for t in (g, u, w, a, b))
    x = meta(2, 5, 8)
    y = _LoraLinear.apply(x, w, None, a, b, 2.0)
    y.sum().backward()
    assert y.device.type == "meta" and x.grad.device.type == "meta"
