"""Optional fast paths for training and scoring, behind one boundary.

Each one computes the same thing as the plain code (loss.py, the model's own layers) up to float
rounding, has a plain fallback, and an equivalence test:

| switch (`train.speed.*`) | module | what |
|---|---|---|
| `fused_lora` | fused_lora.py | LoRA update with one addmm (tests/test_fused_lora.py) |
| `fused_mlp` | fused_mlp.py | SwiGLU MLP keeps 2 of 4 activations (tests/test_fused_mlp.py) |
| `packed_attention` | packed_attention.py | sdpa per packed example (tests/test_packed_attention.py) |
| `cpu_matmul` | cpu_blas.py | CPU fp32 products through numpy's OpenBLAS (tests/test_cpu_blas.py) |
| `loss_chunk_tokens` | chunked_loss.py | lm_head + cross-entropy in chunks (tests/test_train_techniques.py) |
| `shared_prefix` | shared_prefix.py | a frozen LM (VLM stage 1) reads the prefix all examples share once (tests/test_shared_prefix.py; wrapped around `loss` by train.py, which has the data) |
| `train.autocast: auto` | cpu_bf16.py | bf16 autocast where this CPU's bf16 products are >= 1.5x faster (AMX) |

The training recipe knows only `enabled()`:

    with speed.enabled(model, cfg.train.speed, device, recorded=..., log=log) as fast:
        ... loss, n = fast.loss(model, batch) ...   # instead of loss.summed_loss
        meta["speed"] = fast.kernels                  # the kernel choice, kept for resume

Nothing here runs on `import sftlab`; `configure_openmp()` is the one process-wide setting and the
`sftlab` command calls it before torch loads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

# libgomp's spin-wait after each torch parallel region (GOMP_SPINCOUNT, 300,000 iterations by
# default: milliseconds) takes the cores from the OpenBLAS threads of cpu_blas.py; at 1000 torch's
# own speed was unchanged and OpenBLAS ran 1.12x faster in SmolLM2 LoRA steps (see cpu_blas.py).
OMP_ENV_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}


def configure_openmp() -> bool:
    """Set OMP_ENV_DEFAULTS where the user has not set them. libgomp reads them once, when torch
    loads, so this only works before `import torch`: returns False (and changes nothing) after."""
    if "torch" in sys.modules:
        return False
    for key, value in OMP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return True


@dataclass
class Speed:
    """What `enabled()` hands the loop: the loss function to use and the kernel choices made."""

    loss: Callable  # (model, batch) -> (summed loss over trained tokens, trained tokens)
    # CPU runs: {"cpu_matmul": "openblas" | "torch"}, and {"autocast": "bf16" | "off"} when train.autocast is auto;
    # saved in checkpoints, reused on resume
    kernels: dict = field(default_factory=dict)
    autocast: str = "off"  # the training forward's autocast: "bf16" or "off" (train.autocast, auto resolved)


@contextlib.contextmanager
def enabled(model, cfg, device, *, recorded: dict | None = None, autocast: str = "off", log=print):
    """Inside the block the model runs with the fast paths `cfg` (a config.SpeedConfig) turns on.
    Wrap the whole loop (forward AND backward: gradient checkpointing re-runs the forward inside the
    backward) and the final evaluation. Attention and BLAS routing are restored on exit; fused
    LoRA/MLP layers stay fused (the same weights, state dict and saved files; `unfuse_*_layers`
    switch them back).

    `recorded`: the `kernels` of the checkpoint a run resumes from; `cpu_matmul: auto` then reuses
    that choice instead of timing again, so a resumed run computes with the kernels it started with; so does
    `autocast` ("off", "bf16" or "auto": train.autocast)."""
    from accelerate.utils import extract_model_from_parallel

    from sftlab.loss import summed_loss
    from sftlab.speed import chunked_loss, cpu_blas
    from sftlab.speed.fused_lora import fuse_lora_layers
    from sftlab.speed.fused_mlp import fuse_mlp_layers
    from sftlab.speed.packed_attention import packed_attention

    base = extract_model_from_parallel(model)  # through DDP / torch.compile wrappers
    use_blas = cpu_matmul_choice(cfg.cpu_matmul, base, device, recorded, log)
    loss = summed_loss if cfg.loss_chunk_tokens is None else functools.partial(chunked_loss.summed_loss, chunk_tokens=cfg.loss_chunk_tokens)
    if cfg.fused_lora:  # any peft LoRA layers, also those of a model passed in
        fuse_lora_layers(base)
    if cfg.fused_mlp:
        fuse_mlp_layers(base)
    cast = autocast_choice(autocast, base, device, recorded, log)
    kernels = {"cpu_matmul": "openblas" if use_blas else "torch"} if device.type == "cpu" else {}
    if autocast == "auto":
        kernels["autocast"] = cast
    with cpu_blas.blas_matmuls(use_blas), packed_attention(base, cfg.packed_attention):
        yield Speed(loss, kernels, cast)


def autocast_choice(mode: str, model, device, recorded: dict | None, log=print) -> str:
    """"bf16" or "off" for train.autocast = mode; `auto` reuses a recorded choice (resume) or times it (cpu_bf16.py)."""
    from sftlab.speed import cpu_bf16

    before = (recorded or {}).get("autocast")
    if mode == "auto" and before in ("bf16", "off"):
        log(f"autocast: {before} (chosen at the run's start, recorded in the checkpoint; train.autocast: auto does not "
            "time again on resume)")
        return before
    cast, why = cpu_bf16.decide(mode, model, device)
    if mode == "auto":
        log(f"autocast: {cast} ({why})")
    return cast


def cpu_matmul_choice(mode: str, model, device, recorded: dict | None, log=print) -> bool:
    """Use OpenBLAS for the linear layers' products? `auto` reuses a recorded choice (resume)."""
    from sftlab.speed import cpu_blas

    before = (recorded or {}).get("cpu_matmul")
    if mode == "auto" and device.type == "cpu" and before in ("openblas", "torch"):
        if before == "openblas" and (why := cpu_blas.unavailable_for(model)):
            log(f"warning: the checkpoint's run used OpenBLAS for CPU matmuls, but {why}: using torch "
                "(results differ from an unbroken run by float rounding)")
            return False
        log(f"cpu matmul: {'OpenBLAS' if before == 'openblas' else 'torch'} (chosen at the run's start, "
            "recorded in the checkpoint; train.speed.cpu_matmul: auto does not time again on resume)")
        return before == "openblas"
    use, why = cpu_blas.decide(mode, model, device)
    if why:
        log(f"cpu matmul: {'OpenBLAS' if use else 'torch'} ({why})")
    if before in ("openblas", "torch") and before != ("openblas" if use else "torch"):
        log(f"note: the checkpoint's run used {before} for CPU matmuls; train.speed.cpu_matmul: {mode} now uses "
            f"{'openblas' if use else 'torch'} (the same math up to float rounding)")
    return use


def scoring(model):
    """Per-example attention alone, for scoring packed rows without gradients (evaluate/perplexity.py):
    rows there are long (4096 tokens) and hold many short examples, where one masked attention over
    the row is mostly wasted work."""
    from sftlab.speed.packed_attention import packed_attention

    return packed_attention(model, True)
