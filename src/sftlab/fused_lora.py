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


def _fused_class():
    from peft.tuners.lora.layer import Linear

    class FusedLoraLinear(Linear):
        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            parts = vanilla_lora_parts(self, x, *args, **kwargs)
            if parts is None:
                return super().forward(x, *args, **kwargs)
            base, lora_a, lora_b, scaling = parts
            result = base(x)
            h = lora_a(self.lora_dropout[self.active_adapters[0]](x))
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
