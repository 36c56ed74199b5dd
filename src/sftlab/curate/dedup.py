"""Deduplication blocks: exact (normalised text hash), near (MinHash LSH), semantic (embeddings).

All three keep the FIRST occurrence and record every removed -> kept pair with a similarity, so
`stats.pairs` shows what was collapsed onto what.

Memory: each keeps an index that grows with the number of KEPT rows (never the conversations):
  exact    16 bytes digest + set slot per kept row (~100 B)
  minhash  a 12-byte entry per band in numpy tables 1/4-1/2 full (14 bands at threshold 0.8 /
           128 perms) + a 16-bit signature (256 B) to confirm candidates: ~0.6-0.9 KB per kept row
           plus its id string (benchmarks/bench_dedup.py measures it)
  semantic one 384-float embedding per kept row (1.5 KB) and O(kept) work per row.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig, DupPair, conversation_text, normalised_conversation
from sftlab.curate.lsh_index import BandIndex, band_keys


class ExactDedupConfig(BlockConfig):
    type: Literal["exact_dedup"] = "exact_dedup"


class ExactDedup(Block):
    """Drops a conversation whose normalised text (lowercase, no punctuation, collapsed whitespace,
    over all messages) equals an earlier one's."""

    Config = ExactDedupConfig

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        first: dict[bytes, str] = {}  # digest -> id of the kept conversation
        for conv in conversations:
            self.stats.seen += 1
            digest = hashlib.blake2b(normalised_conversation(conv).encode("utf-8"), digest_size=16).digest()
            kept_id = first.get(digest)
            if kept_id is None:
                first[digest] = conv.id
                yield conv
            else:
                self.stats.drop(conv, "exact_duplicate", f"same normalised text as {kept_id}")
                self.stats.pairs.append(DupPair(conv.id, kept_id, 1.0))


# ------------------------------------------------------------------------------------ MinHash

_MASK32 = np.uint64(0xFFFFFFFF)
_MIX = np.uint64(0x9E3779B1)  # golden-ratio multiplier: combines word hashes into a shingle hash


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """32-bit hashes of the word n-grams of already-normalised `text`.

    Each word is hashed once (crc32, deterministic across runs unlike Python's hash()), then the
    n-gram hash is a polynomial combination of its word hashes computed with numpy: far cheaper
    than hashing every n-gram string. Texts shorter than `ngram` words give one shingle.
    """
    toks = text.split()
    if not toks:
        return np.zeros(1, dtype=np.uint64)
    wh = np.array(list(map(zlib.crc32, map(str.encode, toks))), dtype=np.uint64)
    n = min(ngram, len(wh))
    h = np.zeros(len(wh) - n + 1, dtype=np.uint64)
    for j in range(n):
        h = (h * _MIX + wh[j:len(wh) - n + 1 + j]) & _MASK32
    return np.unique(h)


class MinHashDedupConfig(BlockConfig):
    type: Literal["minhash_dedup"] = "minhash_dedup"
    threshold: float = Field(0.8, gt=0, lt=1, description="estimated Jaccard of word n-grams to call a duplicate")
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1, le=20)
    seed: int = 1
    lsh_weights: tuple[float, float] = Field(
        (0.1, 0.9), description="(false positive, false negative) weights for datasketch's band optimiser. "
        "Candidates are confirmed by estimated Jaccard, so a false positive costs only a comparison: weigh misses "
        "more. At threshold 0.8/128 perms: (0.5, 0.5) -> 9 bands x 13 rows, finds 63% of pairs at Jaccard 0.84; "
        "(0.1, 0.9) -> 14 x 9, finds 96%.")


class MinHashDedup(Block):
    """Near-duplicate removal with MinHash signatures (datasketch) and banded LSH, streaming:
    each row is queried against the rows kept so far, then inserted if kept.

    datasketch's MinHash computes the signature; the band index is lsh_index.BandIndex (numpy
    open addressing, 8 B per entry) because datasketch's in-memory MinHashLSH costs ~3.4 KB per
    row (measured: 100k rows -> 346 MB) and a dict per band still ~1.9 KB (300k rows). Band count
    and width come from datasketch's own optimiser (MinHashLSH(threshold, num_perm, weights).b/.r).
    LSH candidates are confirmed by their estimated Jaccard >= threshold (LSH alone passes some
    false positives), so the 16-bit signatures of kept rows are stored too.
    """

    Config = MinHashDedupConfig
    cfg: MinHashDedupConfig

    def __init__(self, config: MinHashDedupConfig | None = None, **kw):
        super().__init__(config, **kw)
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=self.cfg.threshold, num_perm=self.cfg.num_perm, weights=self.cfg.lsh_weights)
        self.bands, self.rows_per_band = lsh.b, lsh.r
        self._minhash = MinHash(num_perm=self.cfg.num_perm, seed=self.cfg.seed, hashfunc=int)  # reused: clear()

    def signature(self, normalised_text: str) -> np.ndarray:
        m = self._minhash
        m.clear()
        m.update_batch(shingle_hashes(normalised_text, self.cfg.ngram).tolist())
        return m.hashvalues.copy()

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        index = BandIndex(self.bands)
        sigs = SignatureStore(self.cfg.num_perm)
        ids: list[str] = []
        for conv in conversations:
            self.stats.seen += 1
            sig = self.signature(normalised_conversation(conv))
            keys = band_keys(sig, self.bands, self.rows_per_band)
            cands, slots = index.query(keys)
            sig16 = sig.astype(np.uint16)
            best, best_sim = -1, 0.0
            for cand in set(cands[cands >= 0].tolist()):
                sim = float(np.mean(sigs[cand] == sig16))
                if sim > best_sim or (sim == best_sim and cand < best):
                    best, best_sim = cand, sim
            if best >= 0 and best_sim >= self.cfg.threshold:
                self.stats.drop(conv, "near_duplicate", f"estimated Jaccard {best_sim:.2f} with {ids[best]}")
                self.stats.pairs.append(DupPair(conv.id, ids[best], best_sim))
                continue
            index.insert(keys, len(ids), slots)
            sigs.append(sig16)
            ids.append(conv.id)
            yield conv
        self.stats.notes.update(bands=self.bands, rows_per_band=self.rows_per_band, index_rows=len(ids),
                                index_bytes=index.nbytes + sigs.nbytes)


class SignatureStore:
    """16-bit MinHash signatures of kept rows in 64k-row numpy chunks (no per-row object).
    Equal 32-bit values stay equal; unequal ones collide with probability 1/65536, which raises a
    Jaccard estimate by at most ~0.00002."""

    CHUNK = 1 << 16

    def __init__(self, num_perm: int):
        self.num_perm = num_perm
        self.chunks: list[np.ndarray] = []
        self.n = 0

    def append(self, sig16: np.ndarray) -> None:
        if self.n == len(self.chunks) * self.CHUNK:
            self.chunks.append(np.empty((self.CHUNK, self.num_perm), dtype=np.uint16))
        self.chunks[-1][self.n % self.CHUNK] = sig16
        self.n += 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.chunks[row // self.CHUNK][row % self.CHUNK]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)


# ----------------------------------------------------------------------------------- semantic

class SemanticDedupConfig(BlockConfig):
    type: Literal["semantic_dedup"] = "semantic_dedup"
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity at or above which rows are duplicates")
    batch_size: int = Field(64, ge=1)


class SemanticDedup(Block):
    """Greedy keep-first on sentence embeddings (all-MiniLM-L6-v2): a row whose cosine similarity
    to any kept row is >= threshold is dropped. Rows are encoded in batches; within a batch the
    comparison is still in order, so the result equals one-at-a-time processing."""

    Config = SemanticDedupConfig
    cfg: SemanticDedupConfig

    def __init__(self, config: SemanticDedupConfig | None = None, embedder=None, **kw):
        super().__init__(config, **kw)
        self.embedder = embedder

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        from sftlab.curate.embed import GrowingMatrix, get_embedder

        emb = self.embedder or get_embedder()
        kept = GrowingMatrix(emb.dim)
        kept_ids: list[str] = []
        for batch in _batches(conversations, self.cfg.batch_size):
            vecs = emb.encode(batch)
            for conv, v in zip(batch, vecs):
                self.stats.seen += 1
                if kept.n:
                    sims = kept.rows @ v
                    j = int(np.argmax(sims))
                    if sims[j] >= self.cfg.threshold:
                        self.stats.drop(conv, "semantic_duplicate", f"cosine {sims[j]:.3f} with {kept_ids[j]}")
                        self.stats.pairs.append(DupPair(conv.id, kept_ids[j], float(sims[j])))
                        continue
                kept.append(v)
                kept_ids.append(conv.id)
                yield conv
        self.stats.notes["embedding_truncated"] = emb.truncated


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for x in items:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["ExactDedup", "MinHashDedup", "SemanticDedup", "conversation_text", "shingle_hashes"]
