"""Assemble a new LLaVA (any vision encoder + any causal LM + a fresh projector) on transformers' own
classes, or open an existing HF vision-language model, with its processor.

A new LLaVA is `LlavaForConditionalGeneration`: the encoder's vision tower, a 2-layer GELU MLP projector
(LLaVA-1.5's; the only projector transformers' LLaVA class has), and the language model with its
weights copied in. Its processor is `LlavaProcessor`: the encoder's image processor, the LM's tokenizer
with `<image>` added as a special token, and the LM's chat template extended to read OpenAI/HF content
parts ({"type": "image"} -> `<image>`), so the saved folder works in plain transformers
(`AutoProcessor`, `AutoModelForImageTextToText`, `pipeline("image-text-to-text")`).

Encoders: `builtin:tiny-siglip` is a small SigLIP vision tower built here from a config with seeded
random weights; `builtin:tiny-siglip-shapes` is the same tower pretrained here, before the LLaVA is
built, to name the colour and shape in each cell of the built-in shapes scenes (multimodal/shapes_tower.py:
the stand-in for CLIP pretraining, since no pretrained vision weights can be downloaded on the machines
this runs on). The built-in demo uses the random one by default and the pretrained one with
`--vision-encoder builtin:tiny-siglip-shapes`; docs/multimodal.md says what each shows.
A hub id or local folder of a CLIP or SigLIP model (full or vision-only) loads its pretrained vision
tower and image processor (safetensors only), e.g. google/siglip-base-patch16-224.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from sftlab.conversation import IMAGE_PLACEHOLDER
from sftlab.errors import ModelLoadError

BUILTIN_ENCODER = "builtin:tiny-siglip"
SHAPES_ENCODER = "builtin:tiny-siglip-shapes"
BUILTIN_ENCODERS = (BUILTIN_ENCODER, SHAPES_ENCODER)
# The built-in tower: 2 layers of width 192 (1.0M parameters); 16 px patches, so a 48 px image of the
# built-in 3x3-grid scenes is 9 image tokens, one per grid cell.
TINY_SIGLIP = dict(hidden_size=192, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4)

# OpenAI / HF content parts -> the text the LM's template expects (parts joined by "\n", as the data loader does)
_CONTENT_MACRO = (
    "{%- macro sftlab_content(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- elif p['type'] in ['image', 'image_url'] -%}" + IMAGE_PLACEHOLDER +
    "{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
)
_CONTENT_REF = re.compile(r"message\[['\"]content['\"]\]|message\.content\b")


def multimodal_template(template: str) -> str:
    """`template` (a text chat template) reading content-part lists as well as strings. Templates that
    do not name message['content'] are returned unchanged (string content with `<image>` still works)."""
    if not _CONTENT_REF.search(template):
        return template
    return _CONTENT_MACRO + _CONTENT_REF.sub("sftlab_content(message['content'])", template)


def add_image_token(tokenizer) -> bool:
    """`<image>` as one special token; True if it was added (the LM's embeddings must grow)."""
    if IMAGE_PLACEHOLDER in tokenizer.get_vocab():
        return False
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]}, replace_extra_special_tokens=False)
    return True


def is_vlm_folder(path: str | Path) -> bool:
    """A saved model folder whose config.json has a vision config (LLaVA, SmolVLM, Qwen2-VL, ...)."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "vision_config" in cfg


def encoder_parts(name: str, image_size: int, patch_size: int):
    """(vision config, image processor, has a CLS token) of encoder `name` — no weights loaded."""
    from transformers import AutoConfig, AutoImageProcessor, SiglipImageProcessor, SiglipVisionConfig

    if name in BUILTIN_ENCODERS:
        config = SiglipVisionConfig(image_size=image_size, patch_size=patch_size, **TINY_SIGLIP)
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3, resample=3)
        return config, processor, False
    from sftlab.model import local_path

    path = local_path(name)
    try:
        full = AutoConfig.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the vision encoder {name!r}: {str(e).splitlines()[0]}\n    fix: {_ENCODER_FIX}") from e
    config = getattr(full, "vision_config", full)
    if config.model_type not in ("clip_vision_model", "siglip_vision_model"):
        raise ModelLoadError(f"{name}: vision config of type {config.model_type!r}\n    fix: {_ENCODER_FIX}")
    return config, processor, config.model_type == "clip_vision_model"


_ENCODER_FIX = ("give a CLIP or SigLIP model (hub id or folder with safetensors), builtin:tiny-siglip-shapes "
                "or builtin:tiny-siglip")


def encoder_weights(name: str, config, seed: int, feature_layer: int = -1, log=print) -> dict:
    """The vision tower's weights: pretrained (safetensors), pretrained here on the built-in shapes
    (cached), or seeded random for the plain built-in tower."""
    from transformers import CLIPVisionModel, SiglipVisionModel

    if name == SHAPES_ENCODER:
        from sftlab.multimodal.shapes_tower import pretrained_shapes_tower

        return pretrained_shapes_tower(config, seed=seed, feature_layer=feature_layer, log=log)
    if name == BUILTIN_ENCODER:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SiglipVisionModel(config).state_dict()
    from sftlab.model import local_path

    cls = CLIPVisionModel if config.model_type == "clip_vision_model" else SiglipVisionModel
    try:
        return cls.from_pretrained(local_path(name), use_safetensors=True).state_dict()
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the vision encoder weights of {name!r}: {str(e).splitlines()[0]}\n    fix: {_ENCODER_FIX}") from e


def make_processor(tokenizer, encoder: str, image_size: int, patch_size: int):
    """The LlavaProcessor of a new LLaVA: the encoder's image processor + `tokenizer` (with `<image>`)."""
    from transformers import LlavaProcessor

    vcfg, image_processor, has_cls = encoder_parts(encoder, image_size, patch_size)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vcfg.patch_size,
                          vision_feature_select_strategy="default" if has_cls else "full",
                          chat_template=multimodal_template(tokenizer.chat_template),
                          image_token=IMAGE_PLACEHOLDER, num_additional_image_tokens=1 if has_cls else 0)


def build_llava(lm, processor, *, encoder: str, image_size: int, patch_size: int, feature_layer: int, seed: int):
    """LlavaForConditionalGeneration from a loaded causal LM and the processor make_processor gave (its
    tokenizer has `<image>`). LM and tower weights are copied in; the projector is fresh (seeded)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vcfg, _, has_cls = encoder_parts(encoder, image_size, patch_size)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    n_tokens = (vcfg.image_size // vcfg.patch_size) ** 2
    config = LlavaConfig(vision_config=vcfg, text_config=lm.config, image_token_index=image_id, image_seq_length=n_tokens,
                         vision_feature_select_strategy="default" if has_cls else "full", vision_feature_layer=feature_layer,
                         projector_hidden_act="gelu", tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.model.vision_tower.load_state_dict(encoder_weights(encoder, vcfg, seed, feature_layer))
    if config.tie_word_embeddings:
        model.tie_weights()
    else:
        model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.config.text_config.pad_token_id = tokenizer.pad_token_id
    return model.to(lm.dtype)


def load_vlm(path: str, *, dtype: str = "float32", attn_implementation: str = "sdpa", trust_remote_code: bool = False):
    """An existing vision-language model folder (or hub id) through AutoModelForImageTextToText, safetensors only."""
    from transformers import AutoModelForImageTextToText

    try:
        return AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation=attn_implementation,
                                                           use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the vision-language model {path}: {str(e).splitlines()[0]}") from e


def load_processor(path: str, trust_remote_code: bool = False):
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the processor of {path}: {str(e).splitlines()[0]}\n"
                             "    a vision-language model folder needs its processor files (processor_config.json, "
                             "preprocessor_config.json, tokenizer)") from e
