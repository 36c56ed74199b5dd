"""SwiGLU MLP blocks that keep 2 activations per layer for the backward instead of 4.

A Llama-style MLP computes  down(silu(gate(x)) * up(x)). Under plain autograd the backward keeps
four [tokens, intermediate] tensors per layer: gate(x) (for silu's backward), silu(gate(x)) and
up(x) (for the product's backward) and the product p itself (the input of down_proj, kept for its
weight or LoRA-A gradient). On SmolLM2-135M (intermediate 1536, 30 layers) that is 4 x 3 MB per
layer per 512-token row: 360 MB, over half of all activations a training step keeps.

`fuse_mlp_layers` switches each such block to a forward that keeps only gate(x) and up(x): the
product and silu are cheap elementwise recomputes in the backward (two passes over one tensor),
while everything a matmul produced is kept. down_proj's own matmuls run inside the same autograd
function when it is a plain nn.Linear or a vanilla peft LoRA layer (one adapter, no dropout, no
lora bias, not merged, not DoRA, fp32-consistent dtypes, not ZeRO-3-partitioned); its backward is
the textbook one:

    p  = silu(g) * u                       (recomputed)
    out = p W^T + b + s * (p A^T) B^T       h = p A^T is kept ([tokens, r], small)
    dp = dout W + s * (dout B) A,  dA = s * (dout B)^T p,  dB = s * dout^T h,  dW = dout^T p
    du = dp * silu(g),  dg = silu'(g) * dp * u

Any other down_proj (quantized, multi-adapter, dropout, ...) still gets the product from a
function that keeps only g and u (3 tensors kept instead of 4) and is called as a module.
Same outputs and gradients as the library's forward up to float rounding: tests/test_fused_mlp.py.
Memory and speed: `benchmarks/bench_train.py --techniques library_mlp` (the variant with it off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sftlab.speed.fused_lora import lora_linear_backward, lora_linear_forward

# MLP classes whose forward is exactly  down_proj(act_fn(gate_proj(x)) * up_proj(x))
_SWIGLU_CLASSES = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")


def _silu_mul_input_grads(dp, g, u, silu, need_g: bool, need_u: bool):
    """(dg, du) of p = silu(g) * u for the gradient dp of p; `silu` = silu(g), already recomputed."""
    du = dp * silu if need_u else None
    dg = torch.ops.aten.silu_backward(dp * u, g) if need_g else None
    return dg, du


class _SiluMul(torch.autograd.Function):
    """silu(g) * u, keeping g and u (not silu(g)) for the backward."""

    @staticmethod
    def forward(ctx, g, u):
        ctx.save_for_backward(g, u)
        return F.silu(g).mul_(u)

    @staticmethod
    def backward(ctx, dout):
        g, u = ctx.saved_tensors
        return _silu_mul_input_grads(dout, g, u, F.silu(g), *ctx.needs_input_grad[:2])


class _SwiGLUDown(torch.autograd.Function):
    """down(silu(g) * u) for a plain Linear down (a = b = None) or a LoRA one; keeps g, u, h."""

    @staticmethod
    def forward(ctx, g, u, weight, bias, lora_a, lora_b, scaling):
        out, h = lora_linear_forward(F.silu(g).mul_(u), weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(g, u, weight, lora_a, lora_b, h)
        ctx.scaling, ctx.has_bias = scaling, bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        g, u, weight, lora_a, lora_b, h = ctx.saved_tensors
        need_g, need_u, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:6]
        silu = F.silu(g)
        # only the weight gradients need the product itself
        p2 = (silu * u).reshape(-1, g.shape[-1]) if need_w or need_a else None
        dp, dw, db, da, dbb = lora_linear_backward(dout.reshape(-1, dout.shape[-1]), p2, weight, lora_a, lora_b, h,
                                                   ctx.scaling, True, need_w, need_bias and ctx.has_bias, need_a, need_b)
        dg, du = _silu_mul_input_grads(dp.view_as(g), g, u, silu, need_g, need_u)
        return dg, du, dw, db, da, dbb, None


def _down_parts(down, x: torch.Tensor):
    """(weight, bias, lora_a, lora_b, scaling) when `down` can run inside _SwiGLUDown, else None."""
    if type(down) is torch.nn.Linear:
        w = down.weight
        if hasattr(w, "ds_id") or w.dim() != 2 or w.dtype != x.dtype:
            return None
        return w, down.bias, None, None, 1.0
    from peft.tuners.lora.layer import Linear as LoraLinear

    from sftlab.speed.fused_lora import vanilla_lora_parts

    if not isinstance(down, LoraLinear):
        return None
    parts = vanilla_lora_parts(down, x)
    if parts is None or type(down.lora_dropout[down.active_adapters[0]]) is not torch.nn.Identity:
        return None
    base, lora_a, lora_b, scaling = parts
    if type(base) is not torch.nn.Linear or hasattr(base.weight, "ds_id") or base.weight.dtype != x.dtype:
        return None
    return base.weight, base.bias, lora_a.weight, lora_b.weight, scaling


def _fused_forward(self, x: torch.Tensor) -> torch.Tensor:
    g, u = self.gate_proj(x), self.up_proj(x)
    if not torch.is_grad_enabled() or not (g.requires_grad or u.requires_grad):
        return self.down_proj(F.silu(g) * u)  # inference: nothing is kept anyway
    parts = _down_parts(self.down_proj, g)
    if parts is None:
        return self.down_proj(_SiluMul.apply(g, u))
    return _SwiGLUDown.apply(g, u, *parts)


_fused_classes: dict[type, type] = {}


def _is_swiglu(module) -> bool:
    from transformers.activations import SiLUActivation

    return (
        type(module).__name__ in _SWIGLU_CLASSES
        and type(module).__module__.startswith("transformers.models.")
        and isinstance(getattr(module, "act_fn", None), (SiLUActivation, torch.nn.SiLU))
        and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj"))
    )


def fuse_mlp_layers(model) -> int:
    """Switch every known SwiGLU MLP block in `model` to the memory-saving forward; returns how many."""
    n = 0
    for module in model.modules():
        cls = type(module)
        if cls in _fused_classes.values() or not _is_swiglu(module):
            continue
        if cls not in _fused_classes:
            _fused_classes[cls] = type(f"Fused{cls.__name__}", (cls,), {"forward": _fused_forward, "_sftlab_unfused": cls})
        module.__class__ = _fused_classes[cls]
        n += 1
    return n


def unfuse_mlp_layers(model) -> int:
    """Back to the library's forward (returns how many blocks were switched back)."""
    n = 0
    for module in model.modules():
        if type(module) in _fused_classes.values():
            module.__class__ = type(module)._sftlab_unfused
            n += 1
    return n
