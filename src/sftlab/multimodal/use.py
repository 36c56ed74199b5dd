"""Using a vision-language model: load it with its processor, turn a prompt with images into model
inputs, and decode the images a server request carries — safely.

    is_vlm(name)              a VLM folder, or a LoRA adapter folder whose base is one
    load_vlm_model(name)      (model, processor): AutoModelForImageTextToText, or a PeftModel on one
    prompt_inputs(...)        (prompt ids with `<image>` expanded to the image tokens, {"pixel_values": ...})
    decode_image_url(...)     an OpenAI image_url -> an RGB PIL image, under the server's policy

Prompts are rendered by the same Renderer as training (tokenizer = processor.tokenizer), and each
`<image>` placeholder is expanded by the same `expand_row` as training, to the count the processor
itself puts for that image (`VisionInputs.tokens_for`). Generation then passes `pixel_values` to
`model.generate` (LLaVA uses them in the first forward only); sftlab.generate does that.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

from sftlab.errors import ModelLoadError

# the server's bounds on what one request may make it decode
MAX_IMAGES_PER_REQUEST = 8
MAX_IMAGE_PIXELS = 20_000_000  # decoded width x height; refused before decoding (decompression bombs)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # encoded bytes of one image


def _folder_of(name: str) -> Path | None:
    from sftlab.model import resolve

    try:
        src = resolve(name)
    except ModelLoadError:
        return None
    return Path(src.path) if src.kind == "folder" else None


def adapter_base(name: str) -> str | None:
    """The base model an adapter folder loads (as sftlab.model.load_adapter_model resolves it), else None."""
    from sftlab.model import adapter_base_model

    folder = _folder_of(name)
    if folder is None or not (folder / "adapter_config.json").is_file():
        return None
    try:
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError):
        return None
    return adapter_base_model(base, folder) if base else None


def is_vlm(name: str) -> bool:
    """`name` is a vision-language model folder, or a LoRA adapter folder whose base is one."""
    from sftlab.multimodal.build import is_vlm_folder

    folder = _folder_of(name)
    if folder is None:
        return False
    if is_vlm_folder(folder):
        return True
    base = adapter_base(name)
    if base is None:
        return False
    base_folder = _folder_of(base)
    return base_folder is not None and is_vlm_folder(base_folder)


def load_vlm_model(name: str, *, dtype: str = "float32", attn_implementation: str = "sdpa", trust_remote_code: bool = False,
                   merge_adapter: bool = False):
    """(model, processor) of a VLM folder, or of a LoRA adapter folder on one (a PeftModel on the base
    loaded through AutoModelForImageTextToText). The processor is the folder's own (a stage-2 `final/`
    holds one), else the base's. Its tokenizer gets a pad token (eos) when it has none."""
    from sftlab.model import load_model
    from sftlab.multimodal.build import load_processor

    if not is_vlm(name):
        raise ModelLoadError(f"{name} is not a vision-language model folder (its config.json has no vision_config) "
                             "nor a LoRA adapter on one")
    folder = _folder_of(name)
    model = load_model(name, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
                       merge_adapter=merge_adapter)
    has_processor = any((folder / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    proc_from = str(folder) if has_processor or adapter_base(name) is None else adapter_base(name)
    processor = load_processor(proc_from, trust_remote_code=trust_remote_code)
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, processor


def prompt_inputs(vision, renderer, messages: list[dict], images=()) -> tuple[list[int], dict]:
    """(prompt ids with each `<image>` token expanded to the image's tokens, the images' model inputs
    ({"pixel_values": ...}, {} without images)). `images`: references (paths, data: URLs) or PIL
    images, one per `<image>` placeholder in the messages' text, in order. Raises ValueError when the
    counts differ."""
    from PIL import Image

    from sftlab.multimodal.images import load_image
    from sftlab.multimodal.vision import expand_row
    from sftlab.render import Rendered

    ids = renderer.render_prompt(messages)
    image_id = vision.image_token_id if vision is not None else None
    if not images:
        n = ids.count(image_id) if image_id is not None else 0
        if n:
            raise ValueError(f"the prompt has {n} {vision.image_token} placeholder(s) but no images")
        return ids, {}
    if vision is None:
        raise ValueError("images given to a text-only model")
    pil = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
    counts = [vision.tokens_for(im) for im in pil]
    refs = tuple(im if isinstance(im, str) else "" for im in images)
    row = expand_row(Rendered(ids, [0] * len(ids)), image_id, counts, refs)
    return row.input_ids, pixel_inputs(vision.processor, pil)


def pixel_inputs(processor, images: list) -> dict:
    """The image processor's tensors (pixel_values, ...) of PIL `images`, in order."""
    import torch

    out = processor.image_processor(images=list(images), return_tensors="pt")
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


# ---- server: image_url parts -> PIL images, under a policy ------------------------------------------
class ImageRefused(ValueError):
    """An image_url the server will not or cannot use; `code` is the OpenAI-style error code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def decode_image_url(url: Any, *, allow_local: bool = False, allow_remote: bool = False,
                     max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES):
    """An OpenAI image_url's `url` -> an RGB PIL image. data: URLs (base64) are always accepted;
    http(s) URLs only with allow_remote (downloaded once into the image cache); local paths and
    file:// URLs only with allow_local. Images over `max_pixels` (width x height, read from the header
    before decoding) or `max_bytes` are refused. Raises ImageRefused with a message for the client."""
    from sftlab.multimodal.images import _scheme, is_data_url, is_remote

    if not isinstance(url, str) or not url.strip():
        raise ImageRefused("image_url.url must be a non-empty string (a data:image/...;base64, URL)", "invalid_image_url")
    url = url.strip()
    if is_data_url(url):
        if len(url) > max_bytes * 4 // 3 + 200:
            raise ImageRefused(f"image over {max_bytes >> 20} MiB", "image_too_large")
        header, sep, payload = url.partition(",")
        if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
            raise ImageRefused(f"a data: URL image must be data:image/<type>;base64,<bytes>, got {header[:60]!r}",
                               "invalid_image_url")
        try:
            data = base64.b64decode(payload.strip(), validate=True)
        except (ValueError, binascii.Error) as e:
            raise ImageRefused(f"the data: URL's base64 payload does not decode ({e})", "invalid_image_url") from None
        return _open_bounded(io.BytesIO(data), "the data: URL image", max_pixels)
    if is_remote(url):
        if not allow_remote:
            raise ImageRefused("http(s) image URLs are refused by this server (it fetches nothing unless started with "
                               "`sftlab serve --allow-remote-images`); send the image inline as a data:image/...;base64, URL",
                               "remote_image_refused")
        from sftlab.errors import DataError
        from sftlab.multimodal.images import _download

        try:
            path = _download(url)
        except DataError as e:
            raise ImageRefused(f"cannot fetch {url[:120]}: {e.problems[0].message}", "image_download_failed") from None
        if path.stat().st_size > max_bytes:
            raise ImageRefused(f"image over {max_bytes >> 20} MiB", "image_too_large")
        return _open_bounded(path, url[:120], max_pixels)
    scheme = _scheme(url)
    if scheme not in ("", "file"):
        raise ImageRefused(f"unsupported image URL scheme '{scheme}://'; send a data:image/...;base64, URL", "invalid_image_url")
    if not allow_local:
        raise ImageRefused("local image paths and file:// URLs are refused by this server (it reads no local file unless "
                           "started with `sftlab serve --allow-local-images`); send the image inline as a "
                           "data:image/...;base64, URL", "local_image_refused")
    from sftlab.errors import DataError
    from sftlab.multimodal.images import resolve_image_ref

    try:
        path = Path(resolve_image_ref(url, Path.cwd()))
    except DataError as e:
        raise ImageRefused(e.problems[0].message, "invalid_image_url") from None
    if not path.is_file():
        raise ImageRefused(f"image file not found: {path}", "image_not_found")
    if path.stat().st_size > max_bytes:
        raise ImageRefused(f"image over {max_bytes >> 20} MiB", "image_too_large")
    return _open_bounded(path, str(path), max_pixels)


def _open_bounded(source, where: str, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > max_pixels:  # checked on the header, before a single pixel is decoded
                raise ImageRefused(f"{where} is {w}x{h} = {w * h:,} pixels, over this server's limit of {max_pixels:,}",
                                   "image_too_large")
            im.load()
            return im.copy() if im.mode == "RGB" else im.convert("RGB")
    except ImageRefused:
        raise
    except UnidentifiedImageError:
        raise ImageRefused(f"{where} is not an image PIL can read (PNG, JPEG, GIF, WebP, ...)", "invalid_image") from None
    except Image.DecompressionBombError as e:
        raise ImageRefused(f"{where} is too large to decode safely: {e}", "image_too_large") from None
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data: PIL raises OSError, SyntaxError, ValueError...
        raise ImageRefused(f"{where} does not decode (truncated or corrupt?): {type(e).__name__}: {e}", "invalid_image") from None
