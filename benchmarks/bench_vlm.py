"""LLaVA-style visual instruction tuning: sftlab vs TRL's VLM fine-tuning, same model, data and recipe.

    pip install --no-deps trl==1.16.0                                   # benchmark only (requirements.txt)
    python benchmarks/bench_vlm.py --tiny --steps 6                      # quick: tiny LM (2 layers, hidden 64) inside the LLaVA
    python benchmarks/bench_vlm.py --steps 30 --seeds 0                  # the demo's LLaVA (SmolLM2-135M-Instruct + tiny SigLIP)
    python benchmarks/bench_vlm.py --show runs/bench-vlm/results.jsonl   # re-print the report of finished runs

Model: ONE LLaVA folder both tools load, assembled once by sftlab's own builder
(sftlab.multimodal.build.make_processor + build_llava, as configs/vlm-stage1.yaml assembles it): the
embedded SmolLM2-135M-Instruct (or, with --tiny, a seeded 2-layer Llama of width 64 with SmolLM2's
tokenizer) + builtin:tiny-siglip (48 px images, 16 px patches: 9 image tokens) + a fresh seeded
projector, saved with its LlavaProcessor under runs/bench-vlm/model-{real,tiny}/. (Stage 2 of the demo
starts from stage 1's trained projector; here both tools start from the fresh one.)
Data: builtin:shapes-stage2 (1,500 one-question conversations about drawn shapes, one image each,
in file order for both tools); held-out: the first --eval-per-family conversations of each of the 8
families of builtin:shapes-eval (5 seen, 3 never trained).
Recipe (both tools): LoRA r=16 alpha=32 dropout 0 on the language model's linear layers only (q,k,v,o,
gate,up,down; never the vision tower or the projector), the projector trained whole (peft
modules_to_save), vision tower frozen; AdamW lr 5e-4 (configs/vlm-stage2.yaml), betas (0.9, 0.999),
weight decay 0, cosine schedule with round(0.05 x steps) linear warm-up steps, clip 1.0, fp32, CPU,
--steps optimizer steps, one micro-batch per step, seed = the run's seed. Examples per step:
TRL per_device_train_batch_size = --per-step; sftlab packs rows of tokens_per_batch =
round(--per-step x mean example length) tokens (its default packed layout), so both see about the
same examples and tokens per step; the report prints both (means over the steps run).
Loss: the assistant answer + its <|im_end|> only, in both. TRL: assistant_only_loss=True; TRL 1.16
needs {% generation %} markers in the template and its get_training_chat_template knows no patch for
this ChatML-with-content-parts template (it would raise), so the TRL worker gives the processor the
same template with markers around answer + <|im_end|> (`GEN_TEMPLATE`; the rendered text is asserted
equal to the folder's own template's). transformers >= 5.18 realigns the assistant mask after the
processor expands <image> to 9 image tokens. Trained tokens per example are printed from each tool
(sftlab's prepared rows, TRL's own collator on single examples) and must match, token ids included.
Runs (each its own subprocess; peak RSS = that process's ru_maxrss at the end of training):
  sftlab       sftlab's defaults: packed rows (no padding, position_ids restart per example, no attention
               across examples), pixel_values in token order, its speed paths (train.speed: auto)
  trl_default  SFTTrainer with SFTConfig defaults except the recipe: padded batches (TRL has no packing
               or padding-free for vision datasets: it refuses both), gradient checkpointing (TRL's
               default), adamw_torch; images decoded and processed per batch by
               DataCollatorForVisionLanguageModeling (datasets Image column)
  trl_fast     the same without gradient checkpointing and with adamw_torch_fused (sftlab's optimizer)
Held-out loss: ONE evaluator process after the runs (no sftlab code; plain transformers + peft):
AutoModelForImageTextToText of the folder, each run's saved adapter via PeftModel.from_pretrained,
the processor's own chat template; the scored positions are the answer + <|im_end|> tokens, found
from the length of the prompt rendered with add_generation_prompt=True (asserted to be a prefix);
mean cross-entropy over all scored tokens, padded batches with an attention mask; also split into
seen and held-out question families. The untuned model is scored the same way.
Throughput: `train s` = the training loop (sftlab: its metrics.jsonl clock; TRL: on_train_begin ->
last on_step_end), data collation and image processing included for both; real tokens = non-padding
tokens (image tokens included), trained = tokens with a loss; `steady` = tok/s over steps after
the first 3 (warm-up). Every worker gets GOMP_SPINCOUNT=1000 (what the `sftlab` command sets before
torch loads; bench_train.py measured TRL as fast or faster with it) and torch threads = --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LR, LORA_R, LORA_ALPHA, WARMUP_RATIO = 5e-4, 16, 32, 0.05
IMAGE_SIZE, PATCH_SIZE, ENCODER = 48, 16, "builtin:tiny-siglip"
# the language model's linear layers, never the vision tower's or the projector's (written here, not
# taken from sftlab; the workers report their trainable parameter names and the parent checks they agree)
LORA_TARGETS = r"^(.*\.)?language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
SYSTEM = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
CONTENT = ("{%- macro content(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c -%}"
           "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}{%- if p['type'] == 'text' -%}{{ p['text'] }}"
           "{%- elif p['type'] in ['image', 'image_url'] -%}<image>{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}")
# the folder's template (SmolLM2's ChatML reading content parts) with {% generation %} around answer + <|im_end|>
GEN_TEMPLATE = (CONTENT + "{% for message in messages %}" + SYSTEM + "{{ '<|im_start|>' + message['role'] + '\\n' }}"
                "{% if message['role'] == 'assistant' %}{% generation %}{{ content(message['content']) + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
                "{% else %}{{ content(message['content']) + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MASK_CHECK_ROWS = 8  # first conversations of the training file whose trained tokens each tool reports


def model_dir(a) -> Path:
    return ROOT / "runs" / "bench-vlm" / ("model-tiny" if a.tiny else "model-real")


# ---- data ----------------------------------------------------------------------------------------
def train_convs():
    from sftlab.builtin.shapes import load_set  # the built-in suite's files (written once into sftlab's cache)

    return load_set("shapes-stage2")


def trl_rows(convs) -> list[dict]:
    """TRL's format: text-only messages + an "images" list; TRL puts one {"type": "image"} part before
    the first user text (prepare_multimodal_messages), which the template renders as "<image>\\n" + text:
    the same text as the suite's "<image>\\nquestion" (checked in the TRL worker)."""
    rows = []
    for c in convs:
        msgs = c.to_dicts()
        assert len(c.images) == 1 and msgs[0]["role"] == "user" and msgs[0]["content"].startswith("<image>\n"), c.id
        assert all("<image>" not in m["content"] for m in msgs[1:]), c.id
        rows.append({"id": c.id, "messages": [{"role": msgs[0]["role"], "content": msgs[0]["content"][len("<image>\n"):]}] + msgs[1:],
                     "images": [c.images[0]]})
    return rows


# ---- the model folder, built once by sftlab's own builder ------------------------------------------
def worker_build(a) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sftlab.model import local_path
    from sftlab.multimodal.build import add_image_token, build_llava, make_processor

    out = model_dir(a)
    lm_folder = local_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(lm_folder)
    if a.tiny:
        torch.manual_seed(0)
        lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                          tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    else:
        lm = AutoModelForCausalLM.from_pretrained(lm_folder, dtype=torch.float32)
    add_image_token(tok)
    proc = make_processor(tok, ENCODER, IMAGE_SIZE, PATCH_SIZE)
    model = build_llava(lm, proc, encoder=ENCODER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, feature_layer=-1, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-vlm-model-", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    proc.save_pretrained(tmp)
    # mean rendered length (image tokens included) of the training rows, for sftlab's packing budget
    lengths = []
    for c in train_convs():
        text = proc.apply_chat_template(c.to_dicts(), tokenize=False)
        enc = proc(text=text, images=[Image.open(p).convert("RGB") for p in c.images], add_special_tokens=False)
        lengths.append(len(enc["input_ids"][0]))
    info = {"mean_len": statistics.mean(lengths), "min_len": min(lengths), "max_len": max(lengths), "rows": len(lengths),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "lm": "tiny llama 2x64" if a.tiny else "SmolLM2-135M-Instruct"}
    (tmp / "bench_vlm.json").write_text(json.dumps(info))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return info


# ---- training workers --------------------------------------------------------------------------------
def warmup_steps(steps: int) -> int:
    return round(WARMUP_RATIO * steps)


def per_step_timing(stamps: list[float], tokens: list[int], skip: int = 3) -> float | None:
    """tok/s over steps skip+1.. (stamps: cumulative seconds at the end of each step)."""
    if len(stamps) <= skip + 1:
        return None
    return sum(tokens[skip:]) / (stamps[-1] - stamps[skip - 1])


def worker_sftlab(a) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    import sftlab.train as st
    from sftlab.config import load_config

    folder = model_dir(a)
    info = json.loads((folder / "bench_vlm.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="bench-vlm-sftlab-"))
    budget = round(a.per_step * info["mean_len"])
    raw = {
        "model": {"name": str(folder)},
        "multimodal": {"trainable": ["projector", "language_model"]},
        "lora": {"enabled": True, "r": LORA_R, "alpha": LORA_ALPHA, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"train": [{"path": "builtin:shapes-stage2"}], "max_len": 256, "cache": False},
        "train": {"output_dir": str(tmp / "run"), "lr": LR, "schedule": "cosine", "warmup_ratio": warmup_steps(a.steps) / a.steps,
                  "max_steps": a.steps, "tokens_per_batch": budget, "max_grad_norm": 1.0, "weight_decay": 0.0,
                  "betas": [0.9, 0.999], "seed": a.seed, "save_every": 0},
    }
    cfg = load_config(raw)
    held: dict = {}
    steps: list[dict] = []
    orig_setup_data, orig_step_batches, orig_setup_model = st.setup_data, st.step_batches, st.setup_model

    def setup_data(*args, **kw):
        out = orig_setup_data(*args, **kw)
        held["tok"], held["data"] = out[0], out[3]
        return out

    def setup_model(*args, **kw):
        m = orig_setup_model(*args, **kw)
        held["trainable"] = sorted(n for n, p in m.named_parameters() if p.requires_grad)
        held["trainable_n"] = sum(p.numel() for p in m.parameters() if p.requires_grad)
        return m

    def step_batches(*args, **kw):
        t = time.perf_counter()
        bs = orig_step_batches(*args, **kw)
        held["data_s"] = held.get("data_s", 0.0) + time.perf_counter() - t
        steps.append({"examples": sum(b.n_examples for b in bs), "tokens": sum(b.n_tokens for b in bs), "trained": sum(b.n_trained for b in bs)})
        return bs

    st.setup_data, st.step_batches, st.setup_model = setup_data, step_batches, setup_model
    result = st.train(cfg)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak of the whole process up to the end of training
    metrics = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == len(steps) == a.steps, (len(metrics), len(steps))
    assert [m["trained_tokens"] for m in metrics] == [s["trained"] for s in steps]
    by_id = {r.id: r for r in held["data"].train.examples}
    first = [c.id for c in train_convs()[:MASK_CHECK_ROWS]]
    masks = {i: {"len": len(by_id[i].input_ids), "trained_ids": [t for t, m in zip(by_id[i].input_ids, by_id[i].loss_mask) if m]}
             for i in first}
    stamps = [m["elapsed_s"] for m in metrics]
    return {"adapter": str(result.final_dir), "tmp": str(tmp), "train_s": stamps[-1], "rss_mb": rss_mb, "stamps": stamps,
            "losses": [m["loss"] for m in metrics], "lrs": [m["lr"] for m in metrics], "grad_norms": [m["grad_norm"] for m in metrics],
            "examples": [s["examples"] for s in steps], "tokens": [s["tokens"] for s in steps], "trained": [s["trained"] for s in steps],
            "padded_tokens": [s["tokens"] for s in steps], "masks": masks, "trainable": held["trainable"], "trainable_n": held["trainable_n"],
            "layout": f"packed rows of <= {budget} tokens", "data_s": held.get("data_s", 0.0), "rows_total": len(held["data"].train),
            "speed": (json.loads((tmp / "run" / "run.json").read_text()).get("speed") if (tmp / "run" / "run.json").exists() else None)}


def worker_trl(a, fast: bool) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    from datasets import Dataset, Image as ImageFeature, Sequence
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    folder = model_dir(a)
    tmp = Path(tempfile.mkdtemp(prefix="bench-vlm-trl-"))
    processor = AutoProcessor.from_pretrained(folder)
    rows = trl_rows(train_convs())
    ds = Dataset.from_list([{"messages": r["messages"], "images": r["images"]} for r in rows]).cast_column("images", Sequence(ImageFeature()))
    # the marker template renders the same text as the folder's own template (TRL's content parts and the suite's strings alike)
    from trl.data_utils import prepare_multimodal_messages

    for r, c in zip(rows[:MASK_CHECK_ROWS], train_convs()[:MASK_CHECK_ROWS]):
        parts = prepare_multimodal_messages(r["messages"], images=["x"])
        own = processor.apply_chat_template(c.to_dicts(), tokenize=False)
        assert processor.apply_chat_template(parts, tokenize=False, chat_template=GEN_TEMPLATE) == own, (r["id"], own)
        assert processor.apply_chat_template(parts, tokenize=False) == own
    processor.chat_template = GEN_TEMPLATE
    args = SFTConfig(
        output_dir=str(tmp), max_steps=a.steps, per_device_train_batch_size=a.per_step, gradient_accumulation_steps=1,
        learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=warmup_steps(a.steps), max_grad_norm=1.0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, seed=a.seed, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
        assistant_only_loss=True, dataloader_num_workers=0, disable_tqdm=True, max_length=None,
        gradient_checkpointing=not fast, optim="adamw_torch_fused" if fast else "adamw_torch",
    )
    lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM")
    stamps: list[float] = []
    logged: list[dict] = []
    steps: list[dict] = []
    holder: dict = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, _args, _state, _control, **_k):
            holder["t0"] = time.time()

        def on_step_end(self, _args, _state, _control, **_k):
            stamps.append(time.time() - holder["t0"])

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "loss" in logs:
                logged.append(dict(logs))

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            steps.append({"examples": int(inputs["input_ids"].shape[0]), "tokens": int(inputs["attention_mask"].sum()),
                          "padded_tokens": int(inputs["input_ids"].numel()), "trained": int((inputs["labels"][..., 1:] != -100).sum())})
            return super().training_step(model, inputs, num_items_in_batch)

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    trainer = Counting(model=model, args=args, train_dataset=ds, processing_class=processor, peft_config=lora, callbacks=[Clock()])
    collate = trainer.data_collator

    def timed_collate(examples):  # the batches' data time: template, tokenizing, image decoding + processing
        t = time.perf_counter()
        out = collate(examples)
        holder["data_s"] = holder.get("data_s", 0.0) + time.perf_counter() - t
        return out

    trainer.data_collator = timed_collate
    trainable = sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad)
    trainable_n = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainer.save_model(str(tmp / "adapter"))
    # TRL's own collator on single examples: what it trains of each
    masks = {}
    for i in range(MASK_CHECK_ROWS):
        b = collate([dict(ds[i])])
        ids, labels = b["input_ids"][0].tolist(), b["labels"][0].tolist()
        masks[rows[i]["id"]] = {"len": len(ids), "trained_ids": [t for t, lab in zip(ids, labels) if lab != -100]}
    assert len(stamps) == len(steps) == a.steps, (len(stamps), len(steps))
    return {"adapter": str(tmp / "adapter"), "tmp": str(tmp), "train_s": stamps[-1], "rss_mb": rss_mb, "stamps": stamps,
            "losses": [x["loss"] for x in logged], "lrs": [x.get("learning_rate") for x in logged], "grad_norms": [x.get("grad_norm") for x in logged],
            "examples": [s["examples"] for s in steps], "tokens": [s["tokens"] for s in steps], "trained": [s["trained"] for s in steps],
            "padded_tokens": [s["padded_tokens"] for s in steps], "masks": masks, "trainable": trainable, "trainable_n": trainable_n,
            "layout": f"padded batches of {a.per_step}" + ("" if fast else ", gradient checkpointing"), "data_s": holder.get("data_s", 0.0)}


# ---- the independent evaluator (plain transformers + peft; no sftlab code) --------------------------------
def eval_convs(per_family: int) -> list[dict]:
    """The first `per_family` conversations of each family of the built-in eval set, as plain dicts
    (read from the suite's JSONL file: sftlab wrote it, the evaluator only reads it)."""
    from sftlab.builtin.shapes import ensure_suite  # where the suite's files are; nothing else of sftlab is used

    path = ensure_suite()["eval"]
    seen: dict[str, int] = {}
    out = []
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        fam = row["meta"]["family"]
        if seen.get(fam, 0) < per_family:
            seen[fam] = seen.get(fam, 0) + 1
            out.append(row)
    return out


def eval_encodings(processor, rows: list[dict]) -> list[dict]:
    from PIL import Image

    enc = []
    for r in rows:
        msgs = r["messages"]
        imgs = [Image.open(p).convert("RGB") for p in r["images"]]
        full_text = processor.apply_chat_template(msgs, tokenize=False)
        prompt_text = processor.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = processor(text=full_text, images=imgs, add_special_tokens=False, return_tensors="pt")
        prompt = processor(text=prompt_text, images=imgs, add_special_tokens=False)["input_ids"][0]
        ids = full["input_ids"][0].tolist()
        answer = processor.tokenizer(msgs[-1]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        p = len(prompt)
        assert ids[:p] == list(prompt) and ids[p : p + len(answer)] == answer, r["id"]
        enc.append({"ids": ids, "span": (p, p + len(answer)), "pixel_values": full["pixel_values"], "split": r["meta"]["split"]})
    return enc


def scored_loss(model, enc: list[dict], pad_id: int, batch: int = 16) -> dict:
    import torch
    import torch.nn.functional as F

    model.eval()
    sums = {"seen": 0.0, "held-out": 0.0}
    counts = {"seen": 0, "held-out": 0}
    with torch.no_grad():
        for s in range(0, len(enc), batch):
            group = enc[s : s + batch]
            width = max(len(e["ids"]) for e in group)
            ids = torch.full((len(group), width), pad_id)
            att = torch.zeros((len(group), width), dtype=torch.long)
            for b, e in enumerate(group):
                ids[b, : len(e["ids"])] = torch.tensor(e["ids"])
                att[b, : len(e["ids"])] = 1
            px = torch.cat([e["pixel_values"] for e in group])
            logits = model(input_ids=ids, attention_mask=att, pixel_values=px, use_cache=False).logits.float()
            for b, e in enumerate(group):
                lo, hi = e["span"]
                ce = F.cross_entropy(logits[b, lo - 1 : hi - 1], ids[b, lo:hi], reduction="sum")
                split = "seen" if e["split"] == "seen" else "held-out"
                sums[split] += float(ce)
                counts[split] += hi - lo
    n = sum(counts.values())
    return {"all": sum(sums.values()) / n, "seen": sums["seen"] / max(1, counts["seen"]),
            "held-out": sums["held-out"] / max(1, counts["held-out"]), "tokens": n}


def worker_eval(a) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(a.threads)
    folder = model_dir(a)
    processor = AutoProcessor.from_pretrained(folder)  # the folder's own chat template
    rows = eval_convs(a.eval_per_family)
    enc = eval_encodings(processor, rows)
    pad = processor.tokenizer.pad_token_id
    adapters = json.loads(a.adapters)
    out = {"rows": len(rows), "base": scored_loss(AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32), enc, pad)}
    for name, path in adapters.items():
        base = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, path)
        assert any("multi_modal_projector" in n and "modules_to_save" in n for n, _ in model.named_parameters()), f"{name}: no projector in the adapter"
        out[name] = scored_loss(model, enc, pad)
    return out


def worker(a) -> dict:
    if a.worker == "build":
        return worker_build(a)
    if a.worker == "sftlab":
        return worker_sftlab(a)
    if a.worker in ("trl_default", "trl_fast"):
        return worker_trl(a, fast=a.worker == "trl_fast")
    if a.worker == "eval":
        return worker_eval(a)
    raise SystemExit(f"unknown worker {a.worker!r}")


# ---- parent ----------------------------------------------------------------------------------------
def run_worker(name: str, a, seed: int = 0, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--steps", str(a.steps), "--per-step", str(a.per_step),
           "--threads", str(a.threads), "--eval-per-family", str(a.eval_per_family)] + (["--tiny"] if a.tiny else []) + (extra or [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GOMP_SPINCOUNT": "1000",
           "PYTHONPATH": str(ROOT / "src"), "TRANSFORMERS_VERBOSITY": "error"}
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"worker {name} seed {seed} failed:\n{p.stderr[-6000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res.update(run=name, seed=seed, process_s=round(time.time() - t0, 1))
    return res


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def report(results: list[dict]) -> None:
    runs = [r for r in results if r.get("kind") == "train"]
    evals = [r for r in results if r.get("kind") == "eval"]
    info = next((r for r in results if r.get("kind") == "model"), None)
    if info:
        print(f"model: LLaVA = {info['lm']} + {ENCODER} ({IMAGE_SIZE}px/{PATCH_SIZE}px) + fresh projector, {info['params_m']:.1f}M parameters; "
              f"training rows: {info['rows']} (rendered length {info['min_len']}-{info['max_len']}, mean {info['mean_len']:.1f} tokens incl. 9 image tokens)")
    for seed in sorted({r["seed"] for r in runs}):
        rs = [r for r in runs if r["seed"] == seed]
        ev = next((e for e in evals if e["seed"] == seed), None)
        print(f"\nseed {seed}, {len(rs[0]['stamps'])} steps; load average before each run: " + ", ".join(f"{r['run']} {r['load']}" for r in rs))
        # the recipe, as each tool ran it
        for r in rs:
            print(f"  {r['run']:12s} {r['layout']}: examples/step {statistics.mean(r['examples']):.1f} (min {min(r['examples'])}, max {max(r['examples'])}), "
                  f"real tokens/step {statistics.mean(r['tokens']):.0f} (computed incl. padding {statistics.mean(r['padded_tokens']):.0f}), "
                  f"trained tokens/step {statistics.mean(r['trained']):.1f}; trainable parameters {r['trainable_n']:,}")
        names = {r["run"]: r["trainable"] for r in rs}
        ref = next(iter(names.values()))
        print("  trainable parameter names: " + ("identical in every run" if all(v == ref for v in names.values()) else
              "DIFFER: " + "; ".join(f"{k}: {len(v)}" for k, v in names.items())))
        # trained tokens per example, side by side
        first = next(iter(rs))["masks"]
        print(f"  trained tokens of the first {len(first)} training conversations (length / trained), per tool:")
        agree = True
        for cid in first:
            cells = []
            for r in rs:
                m = r["masks"][cid]
                cells.append(f"{m['len']}/{len(m['trained_ids'])}")
            same = all(r["masks"][cid] == first[cid] for r in rs)
            agree &= same
            print(f"    {cid}  " + "  ".join(f"{r['run']} {c}" for r, c in zip(rs, cells)) + ("" if same else "  <- DIFFER"))
        print("  -> " + ("lengths and trained token ids identical across tools" if agree else "MISMATCH in trained tokens"))
        print(f"\n  {'run':12s} {'steps':>5s} {'train s':>8s} {'real tok/s':>10s} {'trained tok/s':>13s} {'steady real tok/s':>17s} "
              f"{'data s':>6s} {'peak RSS MB':>11s} {'held-out loss':>13s} {'seen':>7s} {'unseen':>7s}")
        table = {}
        for r in rs:
            real = sum(r["tokens"]) / r["train_s"]
            trained = sum(r["trained"]) / r["train_s"]
            steady = per_step_timing(r["stamps"], r["tokens"])
            e = ev.get(r["run"]) if ev else None
            table[r["run"]] = {"train_s": r["train_s"], "real": real, "trained": trained, "steady": steady, "rss": r["rss_mb"],
                               "loss": e["all"] if e else None}
            print(f"  {r['run']:12s} {len(r['stamps']):5d} {r['train_s']:8.1f} {real:10.1f} {trained:13.2f} "
                  f"{(f'{steady:.1f}' if steady else '-'):>17s} {r.get('data_s', 0):6.1f} {r['rss_mb']:11.0f} "
                  + (f"{e['all']:13.4f} {e['seen']:7.4f} {e['held-out']:7.4f}" if e else f"{'-':>13s}"))
        if ev:
            b = ev["base"]
            print(f"  {'untuned':12s} {'':5s} {'':8s} {'':10s} {'':13s} {'':17s} {'':6s} {'':11s} {b['all']:13.4f} {b['seen']:7.4f} {b['held-out']:7.4f}"
                  f"   ({ev['rows']} held-out conversations, {b['tokens']} scored tokens)")
        s = table.get("sftlab")
        for n, t in table.items():
            if n == "sftlab" or not s:
                continue
            line = (f"  sftlab / {n}: real tok/s {s['real'] / t['real']:.2f}x, trained tok/s {s['trained'] / t['trained']:.2f}x, "
                    f"train time {t['train_s'] / s['train_s']:.2f}x shorter, peak RSS {s['rss'] / t['rss']:.2f}x")
            if s["steady"] and t["steady"]:
                line += f", steady real tok/s {s['steady'] / t['steady']:.2f}x"
            if s["loss"] is not None and t["loss"] is not None:
                line += f", held-out loss {s['loss'] - t['loss']:+.4f}"
            print(line)
        k = min(10, len(rs[0]["losses"]))
        print(f"\n  train loss of steps 1-{k} (each tool's own batches: different examples per step, same base model at step 1) / lr used:")
        for r in rs:
            print(f"    {r['run']:12s} " + " ".join(f"{x:.3f}" for x in r["losses"][:k]) + "  | lr " + " ".join(f"{x:.2e}" for x in r["lrs"][:4]) + " ...")
        print("    mean of the first {} steps: ".format(k) + ", ".join(f"{r['run']} {statistics.mean(r['losses'][:k]):.3f}" for r in rs)
              + "; last 5 steps: " + ", ".join(f"{r['run']} {statistics.mean(r['losses'][-5:]):.3f}" for r in rs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--tiny", action="store_true", help="a tiny Llama (2 layers, hidden 64) as the language model: a quick run")
    ap.add_argument("--runs", default="sftlab,trl_default,trl_fast")
    ap.add_argument("--per-step", type=int, default=8, help="examples per optimizer step (TRL batch size; sftlab: per-step x mean length tokens)")
    ap.add_argument("--eval-per-family", type=int, default=20, help="held-out conversations per question family (8 families)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation (throughput only)")
    ap.add_argument("--keep", action="store_true", help="keep the runs' temporary folders (adapters, checkpoints)")
    ap.add_argument("--rebuild", action="store_true", help="assemble the LLaVA folder again")
    ap.add_argument("--report", default="runs/bench-vlm/results.jsonl", help="JSONL file the results are appended to")
    ap.add_argument("--show", default=None, help="only print the report of a results file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--adapters", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if a.show:
        report([json.loads(x) for x in Path(a.show).read_text().splitlines() if x.strip()])
        return
    out = Path(a.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def keep(res: dict) -> None:
        results.append(res)
        with open(out, "a") as f:
            f.write(json.dumps(res) + "\n")

    folder = model_dir(a)
    if a.rebuild or not (folder / "bench_vlm.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        print(f"# assembling the LLaVA folder {folder} ...", flush=True)
        run_worker("build", a)
    info = json.loads((folder / "bench_vlm.json").read_text())
    keep({"kind": "model", **info, "tiny": a.tiny, "per_step": a.per_step, "steps": a.steps, "time": time.strftime("%Y-%m-%d %H:%M")})
    for seed in [int(s) for s in a.seeds.split(",")]:
        adapters = {}
        for name in a.runs.split(","):
            load = loadavg()
            res = run_worker(name, a, seed)
            res.update(kind="train", load=load)
            keep(res)
            adapters[name] = res["adapter"]
            print(f"# {name} seed {seed}: {res['train_s']:.1f} s train, {sum(res['tokens']) / res['train_s']:.1f} real tok/s, "
                  f"peak RSS {res['rss_mb']:.0f} MB ({res['process_s']:.0f} s process; load before {load})", flush=True)
        if not a.no_eval:
            ev = run_worker("eval", a, seed, ["--adapters", json.dumps(adapters)])
            ev.update(kind="eval")
            keep(ev)
            print(f"# eval seed {seed}: " + ", ".join(f"{k} {v['all']:.4f}" for k, v in ev.items() if isinstance(v, dict) and "all" in v)
                  + f" ({ev['process_s']:.0f} s)", flush=True)
        if not a.keep:  # the runs' temporary folders (checkpoints, adapters)
            import shutil

            for r in results:
                if r.get("kind") == "train" and r["seed"] == seed and r.get("tmp"):
                    shutil.rmtree(r["tmp"], ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
