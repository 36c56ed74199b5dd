"""Image references -> PIL images, and the checks the data loader runs on each reference.

A reference (an entry of `Conversation.images`) is one of:
  - an absolute local path                      /data/coco/train2017/000000033471.jpg
  - a `data:` URL with base64 bytes             data:image/png;base64,iVBORw0KGgo...
  - an http(s) URL, downloaded once into        cache_dir()/images/<sha1 of the URL><suffix>
    (with HF_HUB_OFFLINE=1 or SFTLAB_OFFLINE=1 only an already downloaded one is used)

`resolve_image_ref` turns what a data file says (a relative path, a `file://` URL, ...) into a
reference; `check_image` says why one cannot be used (None when it opens and decodes whole);
`load_image` opens one as RGB. Images that come as bytes (a `datasets` Image column, a Parquet
{"bytes", "path"} struct) are written once to cache_dir()/images/<sha1 of the bytes><suffix> by
`store_image_bytes` and referenced by that path.

Errors are `DataError`s whose Problem names the reference; the loader turns them into row problems
that name file:line and field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sftlab.errors import DataError, Problem

DOWNLOAD_TIMEOUT_S = 30
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
# the first bytes of common image files -> the suffix a stored copy gets (PIL reads by content anyway)
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
          (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
_TRUE = ("1", "ON", "YES", "TRUE")


def image_cache_dir() -> Path:
    """Where downloaded images and images that came as bytes are kept: cache_dir()/images."""
    from sftlab.model import cache_dir

    return cache_dir() / "images"


def offline() -> bool:
    """HF_HUB_OFFLINE or SFTLAB_OFFLINE set to 1/true/yes/on: no image is downloaded."""
    return any(os.environ.get(k, "").strip().upper() in _TRUE for k in ("HF_HUB_OFFLINE", "SFTLAB_OFFLINE"))


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def is_data_url(ref: str) -> bool:
    return ref.startswith("data:")


def _scheme(value: str) -> str:
    head, sep, _ = value.partition("://")
    return head.lower() if sep and head.isascii() and head.replace("+", "").replace("-", "").replace(".", "").isalnum() else ""


def resolve_image_ref(value: Any, base_dir: Path) -> str:
    """What a data file says -> a reference: a relative path resolves against `base_dir` (the data
    file's folder, or a source's `image_dir`), `~` expands, `file://` URLs become absolute paths,
    `data:` and http(s) URLs are kept. Raises DataError for anything else (not a string, empty,
    another URL scheme such as s3://)."""
    if not isinstance(value, str):
        raise DataError(Problem(repr(value)[:60], "", f"an image reference must be a string, got {type(value).__name__}",
                                "write a path, a file:// or data: URL, or an http(s) URL"))
    text = value.strip()
    if not text:
        raise DataError(Problem("''", "", "empty image reference", "write the image's path or URL"))
    if is_data_url(text) or is_remote(text):
        return text
    scheme = _scheme(text)
    if scheme == "file":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise DataError(Problem(text[:80], "", f"file:// URL on another host ({parsed.netloc!r})",
                                    "copy the image here and write its local path"))
        return os.path.abspath(urllib.request.url2pathname(parsed.path))
    if scheme:
        raise DataError(Problem(text[:80], "", f"unsupported image URL scheme '{scheme}://'",
                                "download the image and write its local path (or use an http(s) or data: URL)"))
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir).expanduser().absolute() / path
    return os.path.normpath(path)


def remote_cache_path(url: str) -> Path:
    """Where a downloaded image is kept: image_cache_dir()/<sha1 of the URL><the URL's image suffix>."""
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    return image_cache_dir() / (hashlib.sha1(url.encode("utf-8")).hexdigest() + (suffix if suffix in IMAGE_SUFFIXES else ""))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # another process writing the same content may win: same bytes either way
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_image_bytes(data: bytes, name_hint: str = "") -> str:
    """Keep image bytes (a `datasets` Image value, a Parquet {"bytes", "path"} struct) as
    image_cache_dir()/<sha1 of the bytes><suffix>, written once; returns that path. The suffix is the
    hint's (its original file name) when it is an image suffix, else guessed from the bytes."""
    suffix = Path(name_hint).suffix.lower() if name_hint else ""
    if suffix not in IMAGE_SUFFIXES:
        suffix = next((s for magic, s in _MAGIC if data.startswith(magic)), "")
        if not suffix and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            suffix = ".webp"
    path = image_cache_dir() / (hashlib.sha1(data).hexdigest() + suffix)
    if not path.exists() or path.stat().st_size != len(data):
        _write_atomic(path, data)
    return str(path)


def store_pil_image(image: Any) -> str:
    """A decoded PIL image (what a `datasets` Image column gives by default) -> a stored PNG's path."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return store_image_bytes(buf.getvalue(), "image.png")


def _decode_data_url(ref: str) -> bytes:
    header, sep, payload = ref.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise ValueError("a data: URL must be data:image/...;base64,<bytes>")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"its base64 payload does not decode ({e})") from None


def _download(url: str) -> Path:
    """The cached copy of `url`, downloading it first if needed. Raises DataError."""
    path = remote_cache_path(url)
    if path.exists():
        return path
    if offline():
        raise DataError(Problem(url[:120], "", "remote image while offline (HF_HUB_OFFLINE=1 or SFTLAB_OFFLINE=1) "
                                "and not downloaded before", "download the image and point to the file (a local path or "
                                "file:// URL), or unset HF_HUB_OFFLINE/SFTLAB_OFFLINE"))
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "sftlab"})
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            data = resp.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(Problem(url[:120], "", f"cannot download the image: {type(e).__name__}: {reason}",
                                "check the URL, or download the image and point to the file")) from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DataError(Problem(url[:120], "", f"image over {MAX_DOWNLOAD_BYTES >> 20} MiB", "download it and point to the file"))
    _write_atomic(path, data)
    return path


def _open(ref: str):
    """Open, decode every byte, convert to RGB. A remote URL's failure raises DataError; anything else
    raises what PIL (or the data: URL parser) raised, which load_image explains with image_problem."""
    from PIL import Image

    if is_data_url(ref):
        source: Any = io.BytesIO(_decode_data_url(ref))
    elif is_remote(ref):
        source = _download(ref)
    else:
        source = ref
    with Image.open(source) as im:
        im.load()  # decodes every byte: a truncated or corrupt file fails here (Image.verify misses some)
        return im.copy() if im.mode == "RGB" else im.convert("RGB")


def image_problem(ref: str) -> tuple[str, str, str] | None:
    """(reason code, message, fix) when `ref` cannot be used as an image, else None. Reasons:
    missing_image, unreadable_image, remote_image_offline, image_download_failed, bad_data_url.
    A remote URL is downloaded to the cache (unless offline) so that it can be checked."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(ref, str):
        return "unreadable_image", f"image reference is a {type(ref).__name__}, not a string", "write a path or URL"
    if is_data_url(ref):
        try:
            data = _decode_data_url(ref)
        except ValueError as e:
            return "bad_data_url", f"data: URL {ref[:40]}...: {e}", "write it as data:image/png;base64,<base64 bytes>"
        where, source = f"data: URL ({len(data):,} bytes)", io.BytesIO(data)
    elif is_remote(ref):
        try:
            source = _download(ref)
        except DataError as e:
            p = e.problems[0]
            code = "remote_image_offline" if offline() else "image_download_failed"
            return code, f"{ref}: {p.message}", p.fix
        where = f"{ref} (downloaded to {source})"
    else:
        path = Path(ref)
        if not path.exists():
            return "missing_image", f"image file not found: {ref}", "put the image there or correct the path"
        if not path.is_file():
            return "unreadable_image", f"image path is not a file: {ref}", "point to the image file itself"
        where, source = ref, path
    try:
        with Image.open(source) as im:
            im.load()
        return None
    except UnidentifiedImageError:
        return "unreadable_image", f"not an image file PIL can read: {where}", "re-save it as PNG or JPEG, or drop this row"
    except Image.DecompressionBombError as e:
        return "unreadable_image", f"image too large to open safely: {where}: {e}", "resize the image"
    except Exception as e:  # noqa: BLE001 - PIL raises OSError ("image file is truncated"), SyntaxError, ValueError...
        return "unreadable_image", f"image does not decode (truncated or corrupt?): {where}: {type(e).__name__}: {e}", \
            "re-save or re-download the image, or drop this row"


def check_image(ref: str) -> str | None:
    """None if `ref` opens and decodes whole with PIL, else a one-line reason."""
    problem = image_problem(ref)
    return None if problem is None else problem[1]


def load_image(ref: str):
    """A reference -> an RGB PIL image: an absolute (or relative to the current folder) path, a
    file:// URL, a data:image/...;base64, URL, or an http(s) URL (downloaded once into
    image_cache_dir(); offline, only an already downloaded one). Raises DataError."""
    if isinstance(ref, str) and _scheme(ref) == "file":
        ref = resolve_image_ref(ref, Path.cwd())
    problem = None
    try:
        return _open(ref)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - classified with the loader's checks for one clear message
        problem = image_problem(ref)
        if problem is None:
            raise
    raise DataError(Problem(str(ref)[:120], "", problem[1], problem[2]))
