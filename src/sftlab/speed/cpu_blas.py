"""Linear-layer matrix products through numpy's OpenBLAS on CPUs where it beats torch's MKL.

torch's x86 CPU wheels do fp32 matmuls in MKL. On AMD Zen 2 (this project's 2-core EPYC) MKL
reaches 145 GFLOP/s on a 2048^3 product where OpenBLAS (bundled in numpy's wheels, "Haswell"
kernels) reaches 197; at SmolLM2-135M's linear shapes ([~500 tokens, 576] x [576, 1536] and
back, lm_head [~400, 576] x [576, 49152]) OpenBLAS is 1.2-1.6x faster. Matmuls are ~70% of a
LoRA training step there, so this is the largest single speed lever on such machines.

How: `matmul(a, b)` splits the rows of `a` over `torch.get_num_threads()` threads (the calling
thread plus a small pool; numpy releases the GIL inside BLAS) and runs a single-threaded OpenBLAS
product on each part, writing straight into a torch tensor (numpy views share its memory). OpenBLAS
is limited to one thread of its own: its worker threads spin for ~0.1 s after each call and would
take the cores from torch's next operations.

When: `train.speed.cpu_matmul: auto` calibrates once per process (`choose()`, ~0.5 s): a model-shaped
product and its transpose, with torch elementwise ops in between as in training, timed both ways;
OpenBLAS is used only if it is at least MIN_SPEEDUP faster. That catches the other thing that
matters: after each parallel region torch's OpenMP (libgomp) workers spin-wait for GOMP_SPINCOUNT
iterations (default 300,000: milliseconds) and take the cores from the OpenBLAS threads. Measured
on SmolLM2-135M LoRA steps (same batches, alternated in one process): OpenBLAS 0.985x torch at
GOMP_SPINCOUNT=30000, 1.12x at 100-5000, while torch alone ran at the same speed at 1000 as at the
default (OMP_WAIT_POLICY=PASSIVE also works but costs torch ~2%). The `sftlab` command therefore
sets GOMP_SPINCOUNT=1000 unless it is set, before torch loads (libgomp reads it once, then); API
users call `sftlab.speed.configure_openmp()` before importing torch, or export it themselves, or get
torch's MKL from the calibration. A resumed run reuses the choice recorded in its checkpoint.

Used by the fused LoRA linear (fused_lora.py), the SwiGLU down projection (fused_mlp.py) and the
chunked lm_head + cross-entropy (chunked_loss.py) while `blas_matmuls(True)` is active; they call
`linear`/`matmul` here, which fall back to torch for anything but contiguous-enough fp32 CPU
tensors. Same products up to float summation order (tests/test_cpu_blas.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from sftlab.errors import SftlabError

# OpenBLAS must be at least this much faster at calibration to be used: below it, run-to-run noise
# and the ~2% that OMP_WAIT_POLICY=PASSIVE costs torch's own ops would eat the difference.
MIN_SPEEDUP = 1.10
# rows per thread below which a product is not split (thread hand-off costs ~20-50 us)
MIN_ROWS_PER_THREAD = 32

_state = {"on": False, "threads": 1}
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_limiter = None
_choice: dict | None = None  # calibration result, once per process


def active() -> bool:
    return _state["on"]


@contextlib.contextmanager
def blas_matmuls(enabled: bool):
    """Route linear-layer products through OpenBLAS inside the block (no-op when not enabled)."""
    if not enabled or _state["on"]:
        yield
        return
    _start(torch.get_num_threads())
    try:
        yield
    finally:
        _stop()


def _start(threads: int) -> None:
    global _pool, _pool_size, _limiter
    from threadpoolctl import threadpool_limits

    if _limiter is None:  # OpenBLAS single-threaded per call: we split the rows ourselves
        _limiter = threadpool_limits(limits=1, user_api="blas")
    threads = max(1, threads)
    if threads - 1 > _pool_size:
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="sftlab-blas")
        _pool_size = threads - 1
    _state.update(on=True, threads=threads)


def _stop() -> None:
    global _limiter
    _state["on"] = False
    if _limiter is not None:  # numpy's BLAS threads as they were for the rest of the process
        _limiter.restore_original_limits()
        _limiter = None


def _usable(*ts: torch.Tensor) -> bool:
    # under CPU autocast torch's ops would compute in bf16: leave those products to torch
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 for t in ts)
            and not torch.is_autocast_enabled("cpu"))


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when a linear layer's product x @ weight.T would go through OpenBLAS right now."""
    return _state["on"] and _usable(x.reshape(-1, x.shape[-1]), weight)


def matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b for 2-D tensors (OpenBLAS when active and both are fp32 CPU, else torch), written into
    `out` (a C-contiguous [a rows, b cols] tensor) when given. No autograd: callers are autograd
    Functions that write their own backward."""
    if not (_state["on"] and _usable(a, b)) or (out is not None and not out.is_contiguous()):
        return torch.mm(a, b, out=out) if out is not None else a @ b
    import numpy as np

    if out is None:
        out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)
    an, bn, on = a.detach().numpy(), b.detach().numpy(), out.numpy()
    m, parts = a.shape[0], _state["threads"]
    parts = max(1, min(parts, m // MIN_ROWS_PER_THREAD))
    if parts == 1:
        np.matmul(an, bn, out=on)
        return out
    bounds = [m * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(np.matmul, an[lo:hi], bn, out=on[lo:hi]) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    np.matmul(an[: bounds[1]], bn, out=on[: bounds[1]])
    for f in futures:
        f.result()
    return out


def linear(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x2 @ weight.T + bias for a 2-D x2 (no autograd, see `matmul`)."""
    if not (_state["on"] and _usable(x2, weight)):
        return torch.nn.functional.linear(x2, weight, bias)
    out = matmul(x2, weight.t())
    return out.add_(bias) if bias is not None else out


def decide(mode: str, model, device: torch.device) -> tuple[bool, str]:
    """(use OpenBLAS?, why) for `train.speed.cpu_matmul` = mode on this model and device; why is "" where
    the question does not arise (not a CPU run)."""
    if device.type != "cpu":
        return False, ""
    if mode == "torch":
        return False, "train.speed.cpu_matmul: torch"
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        if mode == "openblas":
            raise SftlabError(f"train.speed.cpu_matmul: openblas needs an fp32 model; this one has {sorted(map(str, dtypes))}. "
                              "Set model.dtype: float32 or train.speed.cpu_matmul: auto.")
        return False, f"the model is not fp32 ({sorted(map(str, dtypes))})"
    if mode == "openblas":
        reason = _unavailable()
        if reason:
            raise SftlabError(f"train.speed.cpu_matmul: openblas, but {reason}. Set train.speed.cpu_matmul: auto or torch.")
        return True, "train.speed.cpu_matmul: openblas"
    cfg = getattr(model, "config", None)
    hidden = getattr(cfg, "hidden_size", None) or 1024
    intermediate = getattr(cfg, "intermediate_size", None) or 4 * hidden
    choice = choose(hidden, intermediate)
    return choice["use"], choice["reason"]


def unavailable_for(model) -> str | None:
    """Why the OpenBLAS path cannot run for this model here (not fp32, no OpenBLAS), or None."""
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        return f"the model is not fp32 ({sorted(map(str, dtypes))})"
    return _unavailable()


def calibration() -> dict | None:
    """This process's `choose()` result, or None before any calibration ran."""
    return _choice


# ---- calibration --------------------------------------------------------------------------------
def choose(hidden: int, intermediate: int, tokens: int = 512, repeats: int = 10) -> dict:
    """Time a [tokens, hidden] x [hidden, intermediate] product (and its transpose) with torch and
    with OpenBLAS, each followed by a torch elementwise op as in training; the result is cached for
    the process. Returns {"use": bool, "torch_gflops", "openblas_gflops", "reason"}."""
    global _choice
    if _choice is not None:
        return _choice
    reason = _unavailable()
    if reason:
        _choice = {"use": False, "torch_gflops": None, "openblas_gflops": None, "reason": reason}
        return _choice
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g)
    w = torch.randn(intermediate, hidden, generator=g)
    z = torch.randn(tokens, intermediate, generator=g)

    def once(use_blas: bool) -> float:
        t = time.perf_counter()
        y = linear(x, w) if use_blas else x @ w.t()
        y.add_(z)  # a torch parallel op between products, as in a training step
        matmul(y, w) if use_blas else y @ w
        torch.nn.functional.silu(x)
        return time.perf_counter() - t

    _start(torch.get_num_threads())
    try:
        best = best_of_alternated(once, repeats)
    finally:
        _stop()
    t_torch, t_blas = (4 * tokens * hidden * intermediate / best[k] / 1e9 for k in (False, True))
    use = t_blas >= MIN_SPEEDUP * t_torch
    env = ", ".join(f"{k}={os.environ.get(k) or 'unset'}" for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"))
    reason = (f"OpenBLAS {t_blas:.0f} vs torch {t_torch:.0f} GFLOP/s at [{tokens}x{hidden}]x[{hidden}x{intermediate}]"
              f" and back, needs {MIN_SPEEDUP:.2f}x; {env}")
    _choice = {"use": use, "torch_gflops": round(t_torch, 1), "openblas_gflops": round(t_blas, 1), "reason": reason}
    return _choice


def best_of_alternated(once, repeats: int) -> dict[bool, float]:
    """{False: best seconds of once(False), True: best of once(True)} over `repeats` alternated pairs, after one
    warm-up pair (thread pools, page faults, oneDNN primitive creation). Alternated, best of each: on a shared
    machine a burst of load then hits both sides alike (timed back to back, a burst during one side's timings
    flipped cpu_matmul's choice in 3 of 10 runs)."""
    best = {False: float("inf"), True: float("inf")}
    for rep in range(repeats + 1):
        for flag in (False, True) if rep % 2 else (True, False):
            dt = once(flag)
            if rep:
                best[flag] = min(best[flag], dt)
    return best


def _unavailable() -> str | None:
    """Why the OpenBLAS path cannot run here, or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl is not installed"
    libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    if not libs:
        import numpy  # noqa: F401  (loads numpy's BLAS so threadpoolctl can see it)

        libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    if not libs:
        return "numpy is not linked to OpenBLAS"
    return None
