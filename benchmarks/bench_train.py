"""sftlab's training loop vs TRL's SFTTrainer: same model, data, sequence budget, trained tokens.

    python benchmarks/bench_train.py --model tiny                # tiny Llama, full FT (~1 min)
    python benchmarks/bench_train.py --model smollm2 --steps 3   # SmolLM2-135M LoRA r=16 (slow on CPU)
    python benchmarks/bench_train.py --prep-only --prep-rows 2000   # data preparation only (cold: no token cache)
    python benchmarks/bench_train.py --techniques                # sftlab alone, one train.* option at a time
    python benchmarks/bench_train.py --allocators                # sftlab alone: glibc malloc vs GLIBC_TUNABLES vs jemalloc

Every run is its own subprocess (peak RSS is that process's ru_maxrss); runs alternate
sftlab, TRL default, TRL best, sftlab, ... so a noisy shared CPU hits all of them alike, and the
report gives ratios of medians. Both sides get the same tokenizer and ChatML template (with
`{% generation %}` markers so TRL's `assistant_only_loss` trains exactly the assistant answers plus
their <|im_end|>, the tokens sftlab trains), the same initial weights / LoRA init, fp32, AdamW,
constant lr, clip 1.0, one micro-batch per step. Throughput is measured over the steps after
`--warmup` (timestamps at step ends), so model loading, data preparation and saving are excluded.

TRL variants:
  trl_default: SFTConfig defaults (padding, gradient_checkpointing=True) except what equality
               needs: fp32 (its default bf16=True would change the loss), lr/schedule/steps,
               assistant_only_loss=True, batch size = sftlab's mean examples per packed row.
  trl_best:    packing=True (strategy "bfd" = padding-free rows with restarting position_ids),
               max_length = sftlab's token budget, gradient_checkpointing=False, optim="adamw_torch_fused"
               (torch's fused AdamW, which sftlab uses by default).
Loss equality: after training, both models are scored on the same held-out conversations with
the same function (sftlab.loss.summed_loss): `eval_loss` must match to within noise.

Model FLOP/s and the fraction of the machine's peak (MFU), printed for every run:
  peak        fp32 product of two 2048x2048 matrices, best of 5 timings, same thread count as the
              runs, the faster of torch.matmul and numpy's OpenBLAS, measured at the start of EVERY round (a shared machine's load drifts; each
              run is divided by its own round's peak).
  FLOPs/token c * N + 6 * N_lora + 12 * L * d * ctx, over every real (non-padding) token processed:
              N      = weights used in matmuls: all parameters except the input embedding, plus the
                       lm_head when it is tied to the embedding (it still runs);
              c = 6  full fine-tuning: forward 2N, backward 4N (activation grads 2N + weight grads 2N);
              c = 4  LoRA: frozen weights need no weight gradient, so forward 2N + activation grads 2N;
              6 * N_lora  the adapters themselves (forward, activation and weight gradients);
              12 * L * d * ctx  attention scores QK^T and A.V (2 * 2 * d per key per layer forward,
                       x3 with the backward); ctx = mean number of keys a token attends to = mean
                       position within its own example (packing restarts attention per example).
  This is the conventional "model FLOPs" count (as PaLM's MFU): work that a technique adds
  (gradient checkpointing's recompute) or saves (sftlab runs the lm_head only at trained
  positions, ~70% of tokens here) does not change it, so MFU compares useful work per second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHATML_GEN = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = ("the model data train token answer question value number result list sort reverse word "
         "first second third because therefore simple example short long text line code function "
         "return print input output loop file error check test small large fast slow good bad").split()


# ---- synthetic chat data (seeded) ---------------------------------------------------------------
def synthetic_conversations(n: int, seed: int) -> list[dict]:
    """Mixed lengths like real chat data: 1-4 turns, prompts 5-60 words, answers ~20-280 tokens
    (words here are 1-2 tokens each; lengths drawn log-uniform so short answers dominate)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": "You are a careful assistant."})
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
            q = " ".join(rng.choices(WORDS, k=rng.randint(5, 60))) + "?"
            a = " ".join(rng.choices(WORDS, k=int(round(10 ** rng.uniform(1.3, 2.45))))) + "."
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": msgs})
    return rows


def fitted_conversations(n: int, seed: int, tok, max_tokens: int) -> list[dict]:
    """synthetic_conversations, each cut to at most max_tokens templated tokens at a turn boundary
    (whole trailing turns dropped; a single over-long answer loses words from its end).

    Both tools then train exactly the same tokens: over-long rows are where they differ by design
    (TRL trains the kept part of an assistant turn cut by truncation; sftlab leaves a cut turn
    untrained, since its end token is missing), which on uncut data made TRL count ~9% more
    trained tokens from the same rows and skewed trained tok/s in its favour."""
    rows = synthetic_conversations(n, seed)
    for row in rows:
        msgs = row["messages"]
        while len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]) > max_tokens:
            if sum(m["role"] == "assistant" for m in msgs) > 1:
                del msgs[-2:]  # the last user + assistant pair
            else:
                words = msgs[-1]["content"].split()
                if len(words) <= 1:
                    raise SystemExit(f"--max-len/--budget {max_tokens}: too small for even a one-word answer to a benchmark prompt")
                msgs[-1]["content"] = " ".join(words[: max(1, len(words) - 8)])
    return rows


# ---- model / tokenizer (identical for both sides) --------------------------------------------------
def make_tokenizer(kind: str):
    # SmolLM2's tokenizer for both models: realistic token counts (a word is ~1 token); the tiny
    # model then has a 49k vocabulary too, so its lm_head is a large share of its compute, as in 135M.
    from sftlab.model import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.chat_template = CHATML_GEN
    return tok


def make_model(kind: str, tok, seed: int):
    import torch

    torch.manual_seed(seed)
    if kind == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False)
        cfg._attn_implementation = "sdpa"
        return LlamaForCausalLM(cfg)
    from sftlab.model import add_lora, load_model

    torch.manual_seed(seed)  # LoRA A init
    return add_lora(load_model("smollm2-135m-instruct"), r=16, alpha=32, dropout=0.0, target_modules="all-linear")


def flops_per_token(model, mean_pos: float) -> float:
    """Conventional model FLOPs per real token (formula in the module docstring):
    c * N + 6 * N_lora + 12 * layers * hidden * mean_pos, c = 6 full fine-tuning, 4 LoRA."""
    lora = hasattr(model, "get_base_model")
    base = model.get_base_model() if lora else model
    emb = base.get_input_embeddings().weight
    n = sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name and p is not emb)
    n_lora = sum(p.numel() for name, p in base.named_parameters() if "lora_" in name)
    if base.config.tie_word_embeddings:
        n += emb.numel()  # the tied lm_head matmul still runs
    c = 4 if lora else 6
    return c * n + 6 * n_lora + 3 * 4 * base.config.num_hidden_layers * base.config.hidden_size * mean_pos


def eval_loss(model, tok, eval_rows: list[dict]) -> float:
    """Mean CE per trained token on held-out rows, one example per forward: same function for both."""
    import torch

    from sftlab.conversation import Conversation
    from sftlab.loss import summed_loss
    from sftlab.pack import collate_packed
    from sftlab.render import Renderer

    renderer = Renderer(tok)
    model.eval()
    tot = n = 0.0
    with torch.no_grad():
        for row in eval_rows:
            loss, k = summed_loss(model, collate_packed([renderer.render(Conversation.from_messages(row["messages"]))]))
            tot += float(loss)
            n += k
    return tot / max(1, n)


# ---- workers (one per subprocess) ------------------------------------------------------------------
def worker_sftlab(a, extra: dict | None = None) -> dict:
    import torch

    from sftlab.config import load_config
    from sftlab.train import train

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sftlab-"))
    tok = make_tokenizer(a.model)
    rows = fitted_conversations(a.rows, a.seed, tok, min(a.max_len, a.budget))
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = make_model(a.model, tok, a.seed)
    cfg = load_config({
        "model": {"name": "unused-model-passed-in", "template": "auto"},
        "lora": {"enabled": False},  # LoRA already applied by make_model (same init as TRL's run)
        "data": {"train": [{"path": str(tmp / "data.jsonl")}], "max_len": a.max_len, "length_policy": "truncate", "packing": True,
                 "cache": False},  # the benchmark's data never lands in the user's token cache
        "train": {"output_dir": str(tmp / "run"), "lr": a.lr, "schedule": "constant", "warmup_ratio": 0.0,
                  "max_steps": a.warmup + a.steps, "tokens_per_batch": a.budget, "grad_accum": 1, "seed": a.seed,
                  **(extra or {}), **json.loads(a.train_extra or "{}")},
    })
    result = train(cfg, model=model, tokenizer=tok)
    lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = lines[a.warmup :]
    # metrics hold trained tokens per step; real tokens per step are recomputed from the same stream
    from sftlab.prepare import prepare
    from sftlab.render import Renderer
    from sftlab.train import step_batches

    data = prepare(Renderer(tok), cfg.data, cfg.train, pad_id=tok.pad_token_id or 0)
    real = [sum(b.n_tokens for b in step_batches(data.train, s, 1, 0, 1)) for s in range(a.warmup, a.warmup + a.steps)]
    seconds = timed[-1]["elapsed_s"] - lines[a.warmup - 1]["elapsed_s"] if a.warmup else timed[-1]["elapsed_s"]
    ex = data.train.examples
    mean_pos = sum(len(r) * (len(r) - 1) / 2 for r in ex) / sum(len(r) for r in ex)
    return {
        "trained_tokens": sum(x["trained_tokens"] for x in timed), "real_tokens": sum(real), "seconds": seconds, "steps": len(timed),
        "loss_last": timed[-1]["loss"], "loss_mean": statistics.mean(x["loss"] for x in timed),
        "eval_loss": eval_loss(model, tok, fitted_conversations(a.eval_rows, a.seed + 1, tok, a.max_len)),
        "flops_per_token": flops_per_token(model, mean_pos),
        "examples_per_row": len(ex) / len(data.train),
        "data_trained": sum(r.n_trained for r in ex), "data_real": sum(len(r) for r in ex),
        "warnings": result.warnings, "nonfinite_skipped": result.nonfinite_skipped_steps,
        "cpu_matmul": cpu_matmul_used(cfg),
    }


def cpu_matmul_used(cfg) -> str:
    """Which BLAS sftlab's train() chose for its linear layers (train.speed.cpu_matmul; speed/cpu_blas.py)."""
    from sftlab.speed import cpu_blas

    if cfg.train.speed.cpu_matmul != "auto":
        return cfg.train.speed.cpu_matmul
    c = cpu_blas.calibration()
    if c is None:  # train() on CPU always calibrates under auto
        raise SystemExit("cpu_matmul auto but no calibration ran in this worker")
    return f"{'openblas' if c['use'] else 'torch'} (calibrated {c['openblas_gflops']} vs {c['torch_gflops']} GFLOP/s)"


def worker_trl(a, best: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    tok = make_tokenizer(a.model)
    model = make_model(a.model, tok, a.seed)
    ds = Dataset.from_list(fitted_conversations(a.rows, a.seed, tok, min(a.max_len, a.budget)))
    args = SFTConfig(
        output_dir=str(tmp), max_steps=a.warmup + a.steps, gradient_accumulation_steps=1,
        # padded batches hold as many examples as sftlab's packed rows do on average (set here: the
        # Trainer reads the batch size at construction; setting trainer.args later, as this benchmark
        # did before 2026-12-02, left TRL default at batch 1, i.e. without padding)
        per_device_train_batch_size=1 if best else a.batch,
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        seed=a.seed, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        bf16=False, assistant_only_loss=True, dataloader_num_workers=0, disable_tqdm=True,
        max_length=a.budget if best else a.max_len,
        packing=best, gradient_checkpointing=not best,  # TRL's default is True; off in its best CPU setting
        optim="adamw_torch_fused" if best else "adamw_torch",  # fused AdamW, as sftlab uses
    )
    stamps, tokens, losses, grad_norms, rows = [], [], [], [], []

    class Clock(TrainerCallback):
        def on_step_end(self, *_a, **_k):
            stamps.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                grad_norms.append(float(logs.get("grad_norm", float("nan"))))

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            lab = inputs["labels"][..., 1:]  # HF shifts labels inside the loss: position 0 is never a target
            att = inputs.get("attention_mask")
            tokens.append((int((lab != -100).sum()), int(att.sum()) if att is not None else int(inputs["input_ids"].numel())))
            rows.append(int(inputs["input_ids"].shape[0]))
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = Counting(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    timed = tokens[a.warmup :]
    return {
        "trained_tokens": sum(t for t, _ in timed), "real_tokens": sum(r for _, r in timed), "steps": len(timed),
        "seconds": stamps[-1] - stamps[a.warmup - 1] if a.warmup else float("nan"),
        "loss_last": losses[-1], "loss_mean": statistics.mean(losses[a.warmup :]),
        "eval_loss": eval_loss(trainer.model, tok, fitted_conversations(a.eval_rows, a.seed + 1, tok, a.max_len)),
        "grad_norms": grad_norms, "batch_rows": sorted(set(rows)),
    }


def worker_prep_sftlab(a) -> dict:
    from sftlab.config import DataConfig, TrainConfig
    from sftlab.prepare import prepare
    from sftlab.render import Renderer

    tmp = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    tok = make_tokenizer("smollm2")
    rows = fitted_conversations(a.prep_rows, a.seed, tok, min(a.max_len, a.budget))
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.perf_counter()
    data = prepare(Renderer(tok), DataConfig(train=[{"path": str(tmp / "data.jsonl")}], max_len=a.max_len, length_policy="truncate",
                                             cache=False),  # cold: no tokenised-data cache hit
                   TrainConfig(tokens_per_batch=a.budget), pad_id=tok.pad_token_id or 0)
    sec = time.perf_counter() - t0
    return {"rows": a.prep_rows, "seconds": sec, "trained": sum(r.n_trained for r in data.train.examples), "packed_rows": len(data.train)}


def worker_prep_trl(a, num_proc: int | None = None) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tmp = Path(tempfile.mkdtemp(prefix="bench-prep-trl-"))
    tok = make_tokenizer("smollm2")
    rows = fitted_conversations(a.prep_rows, a.seed, tok, min(a.max_len, a.budget))
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = SFTConfig(output_dir=str(tmp / "out"), packing=True, max_length=a.budget, assistant_only_loss=True, use_cpu=True,
                     bf16=False, report_to=[], dataset_num_proc=num_proc)
    t0 = time.perf_counter()
    ds = Dataset.from_json(str(tmp / "data.jsonl"), cache_dir=str(tmp / "cache"))
    trainer = SFTTrainer.__new__(SFTTrainer)  # only the dataset preparation, not a model
    trainer.chat_template, trainer.completion_only_loss, trainer._tokenizer = None, False, tok
    from trl.chat_template_utils import has_generation_markers

    assert has_generation_markers(tok.chat_template)
    out = SFTTrainer._prepare_dataset(trainer, ds, tok, args, True, None, "train")
    sec = time.perf_counter() - t0
    trained = sum(sum(1 for x in lab if x != -100) for lab in out["labels"])
    return {"rows": a.prep_rows, "seconds": sec, "trained": trained, "packed_rows": len(out)}


WORKERS = {"sftlab": worker_sftlab, "sftlab_ckpt": lambda a: worker_sftlab(a, {"gradient_checkpointing": True}),
           "prep_trl_np2": lambda a: worker_prep_trl(a, num_proc=2), "trl_default": lambda a: worker_trl(a, False), "trl_best": lambda a: worker_trl(a, True),
           "prep_sftlab": worker_prep_sftlab, "prep_trl": worker_prep_trl, "matmul_peak": lambda a: matmul_peak(a.threads)}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5, min_seconds: float = 0.25) -> dict:
    """The machine's fp32 matmul rate (FLOP/s): best of `repeats` timings of n x n @ n x n, each
    timing at least `min_seconds` long, with the runs' thread count, for torch (MKL on x86 wheels)
    and for numpy's OpenBLAS; the peak is the faster of the two (on AMD Zen 2: OpenBLAS, 197 vs 145)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)

    def best_rate(mm, a, b, out) -> float:
        mm(a, b, out=out)  # warm-up: thread pool start, page faults
        best = 0.0
        for _ in range(repeats):
            done, t0 = 0, time.perf_counter()
            while True:
                mm(a, b, out=out)
                done += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_seconds:
                    break
            best = max(best, 2 * n**3 * done / elapsed)
        return best

    a, b = torch.randn(n, n), torch.randn(n, n)
    t = best_rate(torch.matmul, a, b, torch.empty(n, n))
    with threadpool_limits(limits=threads, user_api="blas"):
        o = best_rate(np.matmul, a.numpy(), b.numpy(), np.empty((n, n), dtype=np.float32))
    return {"flops": max(t, o), "torch": t, "openblas": o}


# ---- variants of sftlab alone: train.* options, threads, allocators -------------------------------------
GLIBC_TUNED = "glibc.malloc.mmap_threshold=1000000000:glibc.malloc.trim_threshold=1000000000"
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")


def find_jemalloc() -> str | None:
    """libjemalloc.so.2 if installed (Debian/Ubuntu: apt-get install libjemalloc2); sftlab never needs it."""
    return next((p for p in JEMALLOC_PATHS if Path(p).exists()), None)


def technique_variants(a) -> list[tuple[str, dict, int, dict]]:
    """(name, env, threads, train overrides). Each toggles ONE thing against `baseline`."""
    other_threads = 1 if a.threads != 1 else 2
    every = [
        ("baseline", {}, a.threads, {}),
        ("checkpointing", {}, a.threads, {"gradient_checkpointing": True}),
        ("compile", {}, a.threads, {"compile": True}),
        ("autocast_bf16", {}, a.threads, {"autocast": "bf16"}),
        ("chunked_loss", {}, a.threads, {"speed": {"loss_chunk_tokens": a.chunk}}),
        (f"threads_{other_threads}", {}, other_threads, {}),
        # the default-on speed/memory paths, switched OFF (baseline has them on)
        ("peft_lora", {}, a.threads, {"speed": {"fused_lora": False}}),
        ("masked_attention", {}, a.threads, {"speed": {"packed_attention": False}}),
        ("library_mlp", {}, a.threads, {"speed": {"fused_mlp": False}}),
        ("torch_matmul", {}, a.threads, {"speed": {"cpu_matmul": "torch"}}),  # MKL instead of the calibrated choice
    ]
    wanted = None if a.techniques == "all" else {"baseline", *a.techniques.split(",")}
    unknown = (wanted or set()) - {v[0] for v in every}
    if unknown:
        raise SystemExit(f"--techniques: unknown {sorted(unknown)}; choose from {[v[0] for v in every]}")
    return [v for v in every if wanted is None or v[0] in wanted]


def allocator_variants(a) -> list[tuple[str, dict, int, dict]]:
    out = [("glibc_default", {}, a.threads, {}), ("glibc_tunables", {"GLIBC_TUNABLES": a.malloc or GLIBC_TUNED}, a.threads, {})]
    lib = find_jemalloc()
    if lib:
        out.append(("jemalloc", {"LD_PRELOAD": lib}, a.threads, {}))
    else:
        print(f"# jemalloc: not found ({', '.join(JEMALLOC_PATHS[:1])} ...); install libjemalloc2 to include it", flush=True)
    return out


# ---- parent: alternate runs, aggregate, print -------------------------------------------------------
PARENT_ONLY = ("worker", "runs", "only", "malloc", "prep_only", "techniques", "allocators", "chunk", "omp_env")


def omp_env(a) -> dict:
    """--omp-env "K=V,K2=V2" as a dict: set in every worker (sftlab's and TRL's alike)."""
    return dict(kv.split("=", 1) for kv in a.omp_env.split(",") if kv) if a.omp_env else {}


def run_worker(name: str, a, extra_env: dict, threads: int | None = None, train_extra: dict | None = None) -> dict:
    args = {k: v for k, v in vars(a).items() if k not in PARENT_ONLY and v is not None}
    if threads is not None:
        args["threads"] = threads
    if train_extra:
        args["train_extra"] = json.dumps(train_extra)
    cmd = [sys.executable, __file__, "--worker", name] + [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    inherited = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}  # only --omp-env
    env = {**inherited, **extra_env, "TQDM_DISABLE": "1"}
    if name.startswith("prep_"):  # data preparation runs as users get it: the tokenizers library's default threads
        env.pop("TOKENIZERS_PARALLELISM", None)
    else:  # training: no tokenizer threads competing with torch's
        env["TOKENIZERS_PARALLELISM"] = "false"
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def print_peak(rnd: int, a, env: dict) -> float:
    p = run_worker("matmul_peak", a, env)
    print(f"round {rnd + 1}: matmul peak {p['flops'] / 1e9:.1f} GFLOP/s (fp32 2048^3, {a.threads} threads; torch "
          f"{p['torch'] / 1e9:.1f}, numpy OpenBLAS {p['openblas'] / 1e9:.1f})", flush=True)
    return p["flops"]


def run_line(rnd: int, name: str, r: dict, fpt: float) -> str:
    return (f"  round {rnd + 1} {name:14s} {r['trained_tokens'] / r['seconds']:8.1f} trained tok/s "
            f"{r['real_tokens'] / r['seconds']:8.1f} real tok/s  MFU {r['real_tokens'] * fpt / r['seconds'] / r['peak_flops']:6.1%}  "
            f"rss {r['peak_rss_mb']:.0f} MB  loss {r['loss_mean']:.4f}  eval {r['eval_loss']:.4f}  "
            f"trained tok/step {r['trained_tokens'] / max(1, r.get('steps', 1)):.0f}"
            + (f"  matmul {r['cpu_matmul']}" if r.get("cpu_matmul") else ""))


def medians(results: dict[str, list[dict]], fpt: float) -> dict[str, dict]:
    return {n: {k: statistics.median(r[k] for r in rs) for k in ("peak_rss_mb", "eval_loss", "loss_mean")}
            | {"tps": statistics.median(r["trained_tokens"] / r["seconds"] for r in rs),
               "rps": statistics.median(r["real_tokens"] / r["seconds"] for r in rs),
               "flops": statistics.median(r["real_tokens"] * fpt / r["seconds"] for r in rs),
               "mfu": statistics.median(r["real_tokens"] * fpt / r["seconds"] / r["peak_flops"] for r in rs),
               "warnings": sorted({w for r in rs for w in r.get("warnings", [])})}
            for n, rs in results.items() if rs}


def compare_variants(a, variants: list[tuple[str, dict, int, dict]], title: str) -> None:
    """sftlab alone under each variant, interleaved: every round measures the matmul peak, then runs
    each variant once, starting one later in the list each round (no variant is always first)."""
    base_env = ({"GLIBC_TUNABLES": a.malloc} if a.malloc and title != "allocators" else {}) | omp_env(a)
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for rnd in range(a.runs):
        peak = print_peak(rnd, a, base_env)
        k = rnd % len(variants)
        for name, env, threads, extra in variants[k:] + variants[:k]:
            r = run_worker("sftlab", a, {**base_env, **env}, threads, extra) | {"peak_flops": peak}
            if "LD_PRELOAD" in env and not r["jemalloc_loaded"]:
                raise SystemExit(f"{name}: LD_PRELOAD={env['LD_PRELOAD']} but libjemalloc is not mapped in the worker")
            results[name].append(r)
            print(run_line(rnd, name, r, r["flops_per_token"]), flush=True)
    ref_name = variants[0][0]
    fpt = results[ref_name][0]["flops_per_token"]  # same model and data in every variant
    med = medians(results, fpt)
    ref = med[ref_name]
    print(f"\n{title}: medians of {a.runs} round(s); ratios are variant / {ref_name} (tok/s: >1 faster; RSS: <1 smaller)")
    print(f"{'variant':16s} {'trained tok/s':>14s} {'x':>6s} {'real tok/s':>11s} {'GFLOP/s':>8s} {'MFU':>6s} "
          f"{'peak RSS MB':>12s} {'x':>6s} {'train loss':>11s} {'d loss':>8s} {'eval loss':>10s}")
    for name, m in med.items():
        print(f"{name:16s} {m['tps']:14.1f} {m['tps'] / ref['tps']:6.2f} {m['rps']:11.1f} {m['flops'] / 1e9:8.2f} {m['mfu']:6.1%} "
              f"{m['peak_rss_mb']:12.0f} {m['peak_rss_mb'] / ref['peak_rss_mb']:6.2f} {m['loss_mean']:11.4f} "
              f"{m['loss_mean'] - ref['loss_mean']:+8.4f} {m['eval_loss']:10.4f}")
        for w in m["warnings"]:
            print(f"{'':16s} ! {w}")
    print(f"FLOPs/token {fpt / 1e6:.2f} M (model FLOPs, see the module docstring); MFU = real tok/s x FLOPs/token / that round's matmul peak")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default: tiny 8, smollm2 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 1; --techniques: 3, since "
                    "torch.compile compiles at step 1 and again with dynamic shapes at step 2)")
    ap.add_argument("--runs", type=int, default=None, help="alternating rounds (default: tiny 3, smollm2 1)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--eval-rows", type=int, default=8)
    ap.add_argument("--budget", type=int, default=None, help="tokens per packed row / per step")
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=None, help="TRL default's padded batch size (default: sftlab's examples per row)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prep-rows", type=int, default=2000)
    ap.add_argument("--prep-only", action="store_true")
    ap.add_argument("--only", default="sftlab,sftlab_ckpt,trl_default,trl_best",
                    help="runs per round, in order (sftlab first: TRL default's batch size is its examples per row)")
    ap.add_argument("--malloc", default="", help="GLIBC_TUNABLES value applied to every worker, e.g. " + GLIBC_TUNED
                    + " (with --allocators: the value its glibc_tunables variant uses)")
    ap.add_argument("--techniques", nargs="?", const="all", default=None, metavar="LIST",
                    help="sftlab alone, each train.* option against baseline: all (default) or a comma list of "
                    "checkpointing,compile,autocast_bf16,chunked_loss,threads_1 and the default-on paths switched off: "
                    "peft_lora,masked_attention,library_mlp,torch_matmul")
    ap.add_argument("--chunk", type=int, default=256, help="train.speed.loss_chunk_tokens of the chunked_loss technique")
    ap.add_argument("--allocators", action="store_true", help="sftlab alone under glibc malloc, GLIBC_TUNABLES and "
                    "jemalloc (LD_PRELOAD, when libjemalloc.so.2 is installed)")
    ap.add_argument("--omp-env", default=None,
                    help="OpenMP settings for EVERY worker, sftlab's and TRL's alike (default: what the `sftlab` command "
                    "sets before torch loads, sftlab.speed.OMP_ENV_DEFAULTS); '' for none")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--train-extra", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    tiny = a.model == "tiny"
    a.steps = a.steps or (8 if tiny else 2)
    a.warmup = a.warmup if a.warmup is not None else (3 if a.techniques else 1)
    a.runs = a.runs or (3 if tiny else 1)
    a.budget = a.budget or 1024
    a.lr = a.lr or (1e-3 if tiny else 2e-4)
    a.rows = a.rows or max(64, 8 * (a.warmup + a.steps) * 2)  # enough rows that no run wraps an epoch
    if a.worker:  # training workers import torch before sftlab: their OpenMP env is exactly what the parent passed
        res = WORKERS[a.worker](a)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        maps = Path("/proc/self/maps")  # Linux: proves an LD_PRELOAD-ed allocator is really in the process
        res["jemalloc_loaded"] = maps.exists() and "libjemalloc" in maps.read_text()
        print(json.dumps(res))
        return
    if a.omp_env is None:
        from sftlab.speed import OMP_ENV_DEFAULTS  # what the `sftlab` command sets before torch loads

        a.omp_env = ",".join(f"{k}={v}" for k, v in OMP_ENV_DEFAULTS.items())
    env = ({"GLIBC_TUNABLES": a.malloc} if a.malloc else {}) | omp_env(a)
    print(f"# bench_train: model={a.model} steps={a.steps} (+{a.warmup} warm-up) runs={a.runs} budget={a.budget} "
          f"max_len={a.max_len} threads={a.threads} GLIBC_TUNABLES={a.malloc or '(unset)'} "
          f"OpenMP env for every worker (sftlab and TRL): {a.omp_env or '(none)'}", flush=True)
    if a.techniques:
        compare_variants(a, technique_variants(a), "techniques")
        return
    if a.allocators:
        compare_variants(a, allocator_variants(a), "allocators")
        return

    # data preparation: rows/s, alternating; cold (sftlab's token cache off, TRL's datasets cache in a fresh folder)
    prep = {"prep_sftlab": [], "prep_trl": [], "prep_trl_np2": []}
    for _ in range(2 if a.prep_only or tiny else 1):
        for name in prep:
            prep[name].append(run_worker(name, a, env))
    ps, pt, pt2 = (min(r["seconds"] for r in prep[k]) for k in prep)
    print(f"data prep ({a.prep_rows} rows, load+render+mask+pack, cold: data.cache=false, best of {len(prep['prep_sftlab'])}; "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}): "
          f"sftlab {a.prep_rows / ps:.0f} rows/s, TRL {a.prep_rows / pt:.0f} rows/s -> ratio {pt / ps:.2f}x; "
          f"TRL dataset_num_proc=2 {a.prep_rows / pt2:.0f} rows/s -> ratio {pt2 / ps:.2f}x "
          f"(trained tokens: sftlab {prep['prep_sftlab'][0]['trained']}, TRL {prep['prep_trl'][0]['trained']}; "
          f"packed rows {prep['prep_sftlab'][0]['packed_rows']} vs {prep['prep_trl'][0]['packed_rows']})", flush=True)
    if a.prep_only:
        return

    names = a.only.split(",")
    results: dict[str, list[dict]] = {n: [] for n in names}
    fpt = float("nan")
    for rnd in range(a.runs):
        peak = print_peak(rnd, a, env)
        for name in names:
            if name.startswith("trl") and a.batch is None:  # needs an sftlab run first (the default order)
                a.batch = max(1, round(results["sftlab"][0]["examples_per_row"])) if results.get("sftlab") else 4
            r = run_worker(name, a, env) | {"peak_flops": peak}
            results[name].append(r)
            fpt = r.get("flops_per_token", fpt)  # sftlab's worker counts it; same model + data for all
            print(run_line(rnd, name, r, fpt), flush=True)
    med = medians(results, fpt)
    print(f"\n{'run':12s} {'trained tok/s':>14s} {'real tok/s':>11s} {'share':>6s} {'GFLOP/s':>8s} {'MFU':>6s} {'peak RSS MB':>12s} {'train loss':>11s} {'eval loss':>10s}")
    for n, m in med.items():
        print(f"{n:12s} {m['tps']:14.1f} {m['rps']:11.1f} {m['tps'] / m['rps']:6.3f} {m['flops'] / 1e9:8.2f} {m['mfu']:6.1%} {m['peak_rss_mb']:12.0f} {m['loss_mean']:11.4f} {m['eval_loss']:10.4f}")
    if results.get("sftlab"):
        r0 = results["sftlab"][0]
        print(f"share = trained / real tokens of the timed steps; of the whole training set it is {r0['data_trained'] / r0['data_real']:.3f} "
              f"({r0['data_trained']} / {r0['data_real']}), the same data and masks for every run (see the data prep line), so over an "
              "epoch the trained tok/s ratio equals the real tok/s ratio; the timed steps' ratio differs by which rows they drew")
    print(f"FLOPs/token {fpt / 1e6:.2f} M (model FLOPs, see the module docstring); MFU = real tok/s x FLOPs/token / that round's matmul peak")
    for mine in (n for n in names if n.startswith("sftlab")):
        for n in (n for n in names if n.startswith("trl")):
            s, t = med[mine], med[n]
            print(f"{mine} / {n}: trained tok/s {s['tps'] / t['tps']:.2f}x, real tok/s {s['rps'] / t['rps']:.2f}x, "
                  f"peak RSS {s['peak_rss_mb'] / t['peak_rss_mb']:.2f}x, eval loss diff {s['eval_loss'] - t['eval_loss']:+.4f}")


if __name__ == "__main__":
    main()
