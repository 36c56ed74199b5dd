"""What a multimodal run adds to train.py's setup: the processor (before rendering, which expands
images to image tokens), the model (a new LLaVA, or an existing vision-language model), and what
trains in this stage.

Stage 1 (feature alignment): multimodal.trainable [projector], lora off: only the projector's
weights change (tests/test_multimodal_train.py checks every other weight is bit-identical).
Stage 2 (visual instruction tuning): [projector, language_model]: LoRA on the language model's
linear layers only (never the vision tower's or the projector's), the projector trained whole
(peft `modules_to_save`, so it is saved in the adapter); without LoRA the language model trains whole.
"""

from __future__ import annotations

import re
from pathlib import Path

from sftlab.errors import ConfigError

# the parameter-name prefixes of each part in transformers' LLaVA-family models (and peft-wrapped ones)
PARTS = {"projector": "multi_modal_projector", "language_model": "language_model", "vision_tower": "vision_tower"}


def is_multimodal(cfg) -> bool:
    """A run on a vision-language model: multimodal: set, or model.name is a VLM folder."""
    from sftlab.model import resolve

    from sftlab.multimodal.build import is_vlm_folder

    if cfg.multimodal is not None:
        return True
    src = resolve(cfg.model.name)
    return src.kind == "folder" and is_vlm_folder(src.path)


def mm_settings(cfg):
    from sftlab.config import MultimodalConfig

    return cfg.multimodal or MultimodalConfig()


def setup_processor(cfg, tokenizer):
    """(processor, tokenizer to render with, tokens added). A new LLaVA: the LM's `tokenizer` (template
    applied) gets `<image>`; an existing VLM: its saved processor and that processor's tokenizer."""
    from sftlab.multimodal.build import add_image_token, is_vlm_folder, load_processor, make_processor

    mm = mm_settings(cfg)
    if mm.vision_encoder:
        from sftlab.model import resolve

        src = resolve(cfg.model.name)
        if src.kind == "folder" and is_vlm_folder(src.path):
            raise ConfigError(f"model.name {cfg.model.name} is already a vision-language model; multimodal.vision_encoder "
                              "assembles a new one from a text LM. Remove multimodal.vision_encoder to fine-tune it as it is")
        added = ["<image>"] if add_image_token(tokenizer) else []
        return make_processor(tokenizer, mm.vision_encoder, mm.image_size, mm.patch_size), tokenizer, added
    from sftlab.model import local_path

    processor = load_processor(local_path(cfg.model.name), trust_remote_code=cfg.model.trust_remote_code)
    return processor, processor.tokenizer, []


def setup_model(cfg, processor):
    """The VLM as configured: a new LLaVA (LM from model.name + encoder), or the one at model.name."""
    from sftlab.model import load_model, local_path

    mm = mm_settings(cfg)
    if mm.vision_encoder:
        from sftlab.multimodal.build import build_llava

        lm = load_model(cfg.model.name, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                        trust_remote_code=cfg.model.trust_remote_code)
        return build_llava(lm, processor, encoder=mm.vision_encoder, image_size=mm.image_size, patch_size=mm.patch_size,
                           feature_layer=mm.feature_layer, seed=mm.seed)
    path = local_path(cfg.model.name)
    if (Path(path) / "adapter_config.json").exists():
        raise ConfigError(f"{cfg.model.name} is a LoRA adapter; train from a full vision-language model folder "
                          f"(merge it first: sftlab export {cfg.model.name} --merge --out merged/)")
    from sftlab.multimodal.build import load_vlm

    return load_vlm(path, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                    trust_remote_code=cfg.model.trust_remote_code)


def part_of(name: str) -> str | None:
    for part, prefix in PARTS.items():
        if re.search(rf"(^|\.){prefix}\.", name):
            return part
    if name.startswith("lm_head.") or ".lm_head." in name:
        return "language_model"
    return None


def apply_trainable(model, cfg):
    """Freeze all but multimodal.trainable; LoRA (lora.enabled) on the language model's linear layers."""
    mm = mm_settings(cfg)
    unknown = sorted({n for n, _ in model.named_parameters() if part_of(n) is None})
    if unknown:
        raise ConfigError(f"cannot tell which part of the model these parameters belong to: {unknown[:5]}; sftlab's "
                          "multimodal training knows LLaVA-style models (vision_tower, multi_modal_projector, language_model)")
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        targets = lora_targets(model, cfg.lora.target_modules, cfg.lora.layers)
        save = [PARTS[p] for p in ("projector", "vision_tower") if p in mm.trainable]
        lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=targets,
                          modules_to_save=save or None, task_type="CAUSAL_LM", use_dora=cfg.lora.use_dora)
        return get_peft_model(model, lcfg)
    for name, p in model.named_parameters():
        p.requires_grad = part_of(name) in mm.trainable
    return model


def lora_targets(model, target_modules, layers: list[int] | None = None) -> str:
    """A peft target regex: the language model's linear layers named in `target_modules` (or all), in
    every decoder layer or only in `layers` (lora.layers)."""
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and part_of(n + ".") == "language_model"
             and not n.endswith("lm_head")]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    wanted = leaves if target_modules == "all-linear" else [m for m in target_modules if m in leaves]
    if not wanted:
        raise ConfigError(f"lora.target_modules {target_modules} matches no linear layer of the language model "
                          f"(it has: {', '.join(leaves)})")
    if layers:
        from sftlab.model import check_lora_layers

        check_lora_layers(layers, model.config.get_text_config().num_hidden_layers)
    where = rf"(.*\.)?layers\.({'|'.join(str(i) for i in sorted(set(layers)))})\." if layers else ""
    return rf"^(.*\.)?language_model\.{where}.*\.({'|'.join(map(re.escape, wanted))})$"
