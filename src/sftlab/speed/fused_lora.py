"""LoRA's update added with one addmm instead of peft's matmul, multiply and add.

peft's lora.Linear computes  result = base(x) + lora_B(lora_A(dropout(x))) * scaling : the
multiply by `scaling` and the add each touch a full [tokens, out_features] tensor, and the
backward multiplies the [tokens, out_features] gradient by `scaling` once more. On a CPU those
elementwise passes are memory-bound: in a SmolLM2-135M LoRA step (210 adapted layers, 512-token
rows) aten::mul and aten::add took ~14% of the step in a torch.profiler run
(not all of them LoRA's).

    result = torch.addmm(base(x), lora_A(dropout(x)), lora_B.weight.T, alpha=scaling)

is the same sum in one BLAS call (beta=1 accumulates into base(x)); its backward scales only the
small [tokens, r] and [r, out] products. Same outputs and gradients up to float rounding
(tests/test_fused_lora.py); speed: `benchmarks/bench_train.py --techniques peft_lora`.

Applied by swapping the class of each plain peft lora.Linear to a subclass (so deepcopy, saving,
merging and isinstance checks behave as before). The fast path runs only in the vanilla case:
one active adapter, not merged, adapters enabled, no DoRA/variant, no lora bias, no extra forward
arguments, input already in the adapter's dtype, lora_B's weight not partitioned (DeepSpeed ZeRO-3
gathers it only when lora_B itself is called). Anything else calls peft's own forward.
"""

from __future__ import annotations

import torch

from sftlab.speed import cpu_blas


def vanilla_lora_parts(module, x: torch.Tensor, *args, **kwargs):
    """(base_layer, lora_A, lora_B, scaling) of a peft lora.Linear in the vanilla case, else None:
    one active adapter, adapters enabled, not merged, no DoRA/variant, no lora bias, no extra
    forward arguments, x already in the adapter's dtype, lora_B's weight not partitioned
    (DeepSpeed ZeRO-3 gathers it only when lora_B itself is called, which the fused paths skip)."""
    adapters = module.active_adapters
    if args or kwargs or module.disable_adapters or module.merged or len(adapters) != 1:
        return None
    name = adapters[0]
    if name not in module.lora_A or name in module.lora_variant:
        return None
    lora_a, lora_b = module.lora_A[name], module.lora_B[name]
    w = lora_b.weight
    partitioned = hasattr(w, "ds_id") or w.dim() != 2 or w.shape[1] != lora_a.weight.shape[0]
    if lora_b.bias is not None or x.dtype != lora_a.weight.dtype or partitioned:
        return None
    return module.base_layer, lora_a, lora_b, module.scaling[name]


def lora_linear_forward(x, weight, bias, lora_a, lora_b, scaling):
    """(y, h): y = x W^T + b + s (x A^T) B^T, made as a fresh [*x.shape[:-1], out] tensor (not a view, so
    autograd Functions can return it), and h = x A^T ([tokens, r], kept for the backward; None without
    LoRA). W's product goes through cpu_blas (OpenBLAS when active, torch otherwise)."""
    x2 = x.reshape(-1, x.shape[-1])
    out = torch.empty(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
    out2 = out.view(-1, weight.shape[0])
    cpu_blas.matmul(x2, weight.t(), out=out2)
    if bias is not None:
        out2.add_(bias)
    if lora_a is None:
        return out, None
    h = x2 @ lora_a.t()
    out2.addmm_(h, lora_b.t(), alpha=scaling)
    return out, h


def lora_linear_backward(d2, x2, weight, lora_a, lora_b, h, scaling, need_x, need_w, need_bias, need_a, need_b):
    """Gradients (dx, dW, db, dA, dB) of  y = x W^T + b + s (x A^T) B^T  for the 2-D output gradient d2:
    dx = d2 W + s (d2 B) A,  dW = d2^T x,  db = sum(d2),  dA = s (d2 B)^T x,  dB = s d2^T h.
    `x2` is only needed for dW / dA; lora_a None means a plain linear layer."""
    dx = cpu_blas.matmul(d2, weight) if need_x else None
    dw = cpu_blas.matmul(d2.t(), x2) if need_w else None
    db = d2.sum(0) if need_bias else None
    da = dbb = None
    if lora_a is not None and (need_x or need_a or need_b):
        dh = (d2 @ lora_b).mul_(scaling)  # [tokens, r]
        if need_a:
            da = dh.t() @ x2
        if need_b:
            dbb = (d2.t() @ h).mul_(scaling)
        if need_x:
            dx.addmm_(dh, lora_a)
    return dx, dw, db, da, dbb


class _LoraLinear(torch.autograd.Function):
    """A vanilla LoRA linear layer (no dropout) with its base products through cpu_blas; keeps x and h."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling):
        out, h = lora_linear_forward(x, weight, bias, lora_a, lora_b, scaling)
        ctx.save_for_backward(x.reshape(-1, x.shape[-1]), weight, lora_a, lora_b, h)
        ctx.scaling, ctx.x_shape, ctx.has_bias = scaling, x.shape, bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        x2, weight, lora_a, lora_b, h = ctx.saved_tensors
        need_x, need_w, need_bias, need_a, need_b = ctx.needs_input_grad[:5]
        dx, dw, db, da, dbb = lora_linear_backward(dout.reshape(-1, dout.shape[-1]), x2, weight, lora_a, lora_b, h,
                                                   ctx.scaling, need_x, need_w, need_bias and ctx.has_bias,
                                                   need_a, need_b)
        return (None if dx is None else dx.view(ctx.x_shape)), dw, db, da, dbb, None


def _fused_class():
    from peft.tuners.lora.layer import Linear

    class FusedLoraLinear(Linear):
        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            parts = vanilla_lora_parts(self, x, *args, **kwargs)
            if parts is None:
                return super().forward(x, *args, **kwargs)
            base, lora_a, lora_b, scaling = parts
            dropout = self.lora_dropout[self.active_adapters[0]]
            if type(base) is torch.nn.Linear and type(dropout) is torch.nn.Identity and cpu_blas.usable(x, base.weight):
                return _LoraLinear.apply(x, base.weight, base.bias, lora_a.weight, lora_b.weight, scaling)
            result = base(x)
            h = lora_a(dropout(x))
            out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), lora_b.weight.t(),
                              alpha=scaling)
            return out.view(result.shape)

    FusedLoraLinear.__name__ = FusedLoraLinear.__qualname__ = "FusedLoraLinear"
    return FusedLoraLinear


_FUSED = None


def fuse_lora_layers(model) -> int:
    """Switch every plain peft lora.Linear in `model` to the addmm forward; returns how many."""
    global _FUSED
    from peft.tuners.lora.layer import Linear

    if _FUSED is None:
        _FUSED = _fused_class()
    n = 0
    for module in model.modules():
        if type(module) is Linear:  # exactly peft's class: quantized / other subclasses keep their own forward
            module.__class__ = _FUSED
            n += 1
    return n


def unfuse_lora_layers(model) -> int:
    """Back to peft's own forward (returns how many layers were switched back)."""
    from peft.tuners.lora.layer import Linear

    n = 0
    for module in model.modules():
        if _FUSED is not None and type(module) is _FUSED:
            module.__class__ = Linear
            n += 1
    return n
