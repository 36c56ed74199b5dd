"""Tokenised-data cache: rendered rows (ids, loss mask, turn ends) stored on disk, reused when the
same conversations are rendered again with the same tokenizer, chat template and `train_on`.

What is stored: the rows as render_batch returns them, BEFORE the length policy and packing. Those
two take milliseconds (bisect packing of 500 rows: ~5 ms) and depend on max_len, length_policy,
tokens_per_batch, seed, packing; keeping them out of the key means changing one of them reuses the
rendering, and their reports (too-long counts, dropped ids) are always computed fresh.

Key (sha256) = cache format + RENDER_VERSION + versions of transformers / tokenizers / jinja2
+ the tokenizer (its full backend JSON: vocab, merges, normalizer, pre-tokenizer, added tokens;
its class, special-token strings and ids, split_special_tokens) + the chat template + train_on
+ every conversation's roles, contents and whether it is a plain-text row, in order.
Conversation ids and file:line sources are not in the key (they never change the tokens); they are
taken from the conversations of the current run, so a moved file still hits.

Layout: <cache dir>/tokenized/<key>/ with int32/uint8/int64 .npy arrays (loaded with
allow_pickle=False: no pickle anywhere) and meta.json (row and token counts, sha256 of each
array file). An entry is written in a temporary folder and renamed into place, so a killed run
never leaves a folder that looks complete; a damaged entry (truncated or edited file, missing
file, wrong counts) is reported, removed and rebuilt.

The cache folder is the one model.py uses for converted GGUF files: $SFTLAB_CACHE, default
~/.cache/sftlab. Entries are never evicted; delete the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sftlab.atomic import atomic_dir
from sftlab.conversation import KINDS, Conversation
from sftlab.render import RENDER_VERSION, Rendered, Renderer

FORMAT = "sftlab-tokenized-v1"
_ARRAYS = ("input_ids", "loss_mask", "row_offsets", "turn_ends", "turn_offsets", "kinds")
_KINDS = KINDS  # a row's kind is stored as its index here: append new kinds, never reorder


def cache_root() -> Path:
    from sftlab.model import cache_dir

    return cache_dir() / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str | None:
    """sha256 of everything in the tokenizer that can change ids or the template text; None for a
    tokenizer without a `tokenizers` backend (its vocab files are not reachable to hash)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.sha256()
    h.update(backend.to_str().encode())  # ~1.5 MB for SmolLM2's 49k vocab, ~70 ms
    template = tokenizer.chat_template
    extra = {
        "class": type(tokenizer).__name__,
        "chat_template": template if isinstance(template, (str, type(None))) else json.dumps(template, sort_keys=True),
        "special_tokens_map": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "all_special_tokens": list(tokenizer.all_special_tokens),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id],
        "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False)),
    }
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


def cache_key(renderer: Renderer, convs: list[Conversation], tokenizer_fp: str) -> str:
    import jinja2
    import tokenizers
    import transformers

    h = hashlib.sha256()
    head = {"format": FORMAT, "render_version": RENDER_VERSION, "train_on": renderer.train_on, "tokenizer": tokenizer_fp,
            "stop": [renderer.stop_text, renderer.stop_token_id],
            "versions": [transformers.__version__, tokenizers.__version__, jinja2.__version__]}
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(len(convs).to_bytes(8, "little"))
    for c in convs:
        # length-prefixed fields: no two different conversation lists give the same byte stream
        h.update(b"T" if c.kind == "text" else b"C")
        h.update(len(c.messages).to_bytes(4, "little"))
        for m in c.messages:
            for s in (m.role, m.content):
                b = s.encode("utf-8", "surrogatepass")  # JSON may hold lone surrogates
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
    return h.hexdigest()[:40]


class CacheDamaged(Exception):
    pass


@dataclass
class TokenCache:
    """One renderer's view of the cache folder. `status` lines say what each lookup did."""

    renderer: Renderer
    root: Path

    def __post_init__(self) -> None:
        self._tokenizer_fp: str | None | bool = False  # computed once, on first use

    @property
    def tokenizer_fp(self) -> str | None:
        if self._tokenizer_fp is False:
            self._tokenizer_fp = tokenizer_fingerprint(self.renderer.tokenizer)
        return self._tokenizer_fp

    def key(self, convs: list[Conversation]) -> str | None:
        fp = self.tokenizer_fp
        return None if fp is None else cache_key(self.renderer, convs, fp)

    # ---- read -----------------------------------------------------------------------------------
    def load(self, key: str, convs: list[Conversation]) -> tuple[list[Rendered] | None, str]:
        """(rows, status): rows is None on a miss; status says why (missing, damaged -> removed)."""
        folder = self.root / key
        if not folder.exists():
            return None, "miss"
        try:
            rows = self._read(folder, key, convs)
        except CacheDamaged as e:
            shutil.rmtree(folder, ignore_errors=True)
            return None, f"damaged entry removed ({e}), rebuilt"
        return rows, "hit"

    def _read(self, folder: Path, key: str, convs: list[Conversation]) -> list[Rendered]:
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise CacheDamaged(f"meta.json unreadable: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
            raise CacheDamaged("meta.json is not this entry's")
        arrays = {}
        for name in _ARRAYS:
            try:
                raw = (folder / f"{name}.npy").read_bytes()
            except OSError as e:
                raise CacheDamaged(f"{name}.npy unreadable: {e}") from e
            if hashlib.sha256(raw).hexdigest() != meta.get("sha256", {}).get(name):
                raise CacheDamaged(f"{name}.npy does not match its checksum ({len(raw)} bytes)")
            try:
                arrays[name] = np.load(io.BytesIO(raw), allow_pickle=False)
            except ValueError as e:
                raise CacheDamaged(f"{name}.npy: {e}") from e
        n = len(convs)
        ids, mask, offs = arrays["input_ids"], arrays["loss_mask"], arrays["row_offsets"]
        ends, end_offs, kinds = arrays["turn_ends"], arrays["turn_offsets"], arrays["kinds"]
        ok = (meta.get("rows") == n and len(offs) == n + 1 and len(end_offs) == n + 1 and len(kinds) == n
              and len(ids) == len(mask) == int(offs[-1]) == meta.get("tokens") and int(end_offs[-1]) == len(ends)
              and bool(np.all(np.diff(offs) >= 0)) and bool(np.all(np.diff(end_offs) >= 0)) and int(offs[0]) == 0
              and int(end_offs[0]) == 0 and (len(kinds) == 0 or int(kinds.max()) < len(_KINDS)))
        if not ok:
            raise CacheDamaged(f"inconsistent counts for {n} rows")
        ids_l, mask_l, ends_l = ids.tolist(), mask.tolist(), ends.tolist()
        offs_l, end_offs_l, kinds_l = offs.tolist(), end_offs.tolist(), kinds.tolist()
        return [Rendered(ids_l[offs_l[i] : offs_l[i + 1]], mask_l[offs_l[i] : offs_l[i + 1]],
                         ends_l[end_offs_l[i] : end_offs_l[i + 1]], c.id, c.source, _KINDS[kinds_l[i]])
                for i, c in enumerate(convs)]

    # ---- write ----------------------------------------------------------------------------------
    def store(self, key: str, rows: list[Rendered]) -> str:
        """Write the entry atomically; returns a status ("stored" or why not). Never raises OSError:
        a read-only or full disk costs the next run a re-render, not this run."""
        folder = self.root / key
        ids = [t for r in rows for t in r.input_ids]
        arrays = {
            "input_ids": np.asarray(ids, dtype=np.int64 if ids and max(ids) >= 2**31 else np.int32),
            "loss_mask": np.asarray([m for r in rows for m in r.loss_mask], dtype=np.uint8),
            "row_offsets": np.cumsum([0] + [len(r.input_ids) for r in rows], dtype=np.int64),
            "turn_ends": np.asarray([t for r in rows for t in r.turn_ends], dtype=np.int64),
            "turn_offsets": np.cumsum([0] + [len(r.turn_ends) for r in rows], dtype=np.int64),
            "kinds": np.asarray([_KINDS.index(r.kind) for r in rows], dtype=np.uint8),
        }
        try:
            with atomic_dir(folder, replace=False) as tmp:  # another process may store the same key first
                sums = {}
                for name, arr in arrays.items():
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    raw = buf.getvalue()
                    sums[name] = hashlib.sha256(raw).hexdigest()
                    (tmp / f"{name}.npy").write_bytes(raw)
                meta = {"format": FORMAT, "key": key, "rows": len(rows), "tokens": len(ids), "sha256": sums}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            return "stored"
        except OSError as e:
            return f"not stored ({e})"
