"""`train.autocast: auto`: bf16 autocast where this machine's bf16 products are much faster than fp32.

CPUs differ: on an Intel Xeon with AMX (amx_bf16) a [2048x576]x[576x1536] bf16 product ran at 793 GFLOP/s against
159 in fp32 (2 cores), and a SmolLM2-135M training step under bf16 autocast was 1.88x faster with the same eval loss
(benchmarks/bench_train.py --techniques autocast_bf16); on the AMD EPYC (Zen 2, no bf16 instructions) this project
started on, the same autocast made a step 11x slower. So `auto` times a model-shaped product both ways once per
process, under autocast exactly as training runs it (fp32 weights cast on the fly), and turns bf16 on only when it is
at least MIN_SPEEDUP faster. On CUDA `auto` means bf16 when the GPU supports it. Weights and optimizer state stay
fp32 either way; evaluation runs without autocast (train.py), so eval losses compare across settings.

Not for LoRA on that CPU: the quickstart's LoRA steps (4 steps, same data, one process after the other) took 15.9 s
under bf16 vs 13.3 s in fp32 (eval loss 1.918 vs 1.909): the fused fp32 LoRA path (fused_lora.py) does not run on
bf16 inputs and peft's own path with its per-call casts costs more than the faster products save. So the shipped
configs keep `off`; `auto` pays off for full fine-tuning.
"""

from __future__ import annotations

import time

import torch

from sftlab.speed import cpu_blas

# a step is more than products (elementwise ops, casts, the fp32 loss): a 5x faster raw product gave a 1.9x faster
# step. This calibration (casts included) measured 2.2-3.1x on the AMX machine in 7 runs; a CPU without bf16
# instructions is far below 1x. 1.5x leaves room for noise on one side and a CPU with slow bf16 on the other.
MIN_SPEEDUP = 1.5

_choice: dict | None = None  # calibration result, once per process


def decide(mode: str, model, device: torch.device) -> tuple[str, str]:
    """("bf16" | "off", why) for `train.autocast` = mode on this model and device."""
    if mode in ("off", "bf16"):
        return mode, f"train.autocast: {mode}"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "off"), f"train.autocast: auto, this GPU {'supports' if ok else 'lacks'} bf16"
    if device.type != "cpu":
        return "off", f"train.autocast: auto does not time {device.type} devices"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes != {torch.float32}:
        return "off", f"train.autocast: auto, the model is not fp32 ({sorted(map(str, dtypes))})"
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg  # a vision-language model: its language model's sizes
    hidden = getattr(cfg, "hidden_size", None) or 1024
    intermediate = getattr(cfg, "intermediate_size", None) or 4 * hidden
    choice = choose(hidden, intermediate)
    return ("bf16" if choice["use"] else "off"), choice["reason"]


def choose(hidden: int, intermediate: int, tokens: int = 1024, repeats: int = 8) -> dict:
    """Time x @ w.T and its transpose product in fp32 and under CPU bf16 autocast (fp32 inputs, as in training),
    alternated, best of each. Cached for the process. {"use", "fp32_gflops", "bf16_gflops", "reason"}."""
    global _choice
    if _choice is not None:
        return _choice
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(intermediate, hidden, generator=g)

    def once(bf16: bool) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = time.perf_counter()
            y = torch.nn.functional.linear(x, w)
            torch.nn.functional.linear(y, w.t())
            return time.perf_counter() - t

    best = cpu_blas.best_of_alternated(once, repeats)
    f32, b16 = (4 * tokens * hidden * intermediate / best[k] / 1e9 for k in (False, True))
    use = b16 >= MIN_SPEEDUP * f32
    reason = (f"train.autocast: auto, bf16 {b16:.0f} vs fp32 {f32:.0f} GFLOP/s at [{tokens}x{hidden}]x[{hidden}x{intermediate}] "
              f"and back, needs {MIN_SPEEDUP:.1f}x")
    _choice = {"use": use, "fp32_gflops": round(f32, 1), "bf16_gflops": round(b16, 1), "reason": reason}
    return _choice
