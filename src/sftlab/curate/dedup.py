"""Deduplication blocks: exact (normalised text hash), near (MinHash LSH), semantic (embeddings).

All three keep the FIRST occurrence and record every removed -> kept pair with a similarity, so
`stats.pairs` shows what was collapsed onto what.

Memory: each keeps an index that grows with the number of KEPT rows (never the conversations):
  exact    16 bytes digest + set slot per kept row (~100 B)
  minhash  a 12-byte entry per band in numpy tables 1/4-1/2 full (14 bands at threshold 0.8 /
           128 perms) + a 16-bit signature (256 B) to confirm candidates: ~0.6-0.9 KB per kept row
           plus its id string (benchmarks/bench_dedup.py measures it); with `index_dir` all of it
           lives in memory-mapped files instead and the process's own memory stays flat
  semantic one 384-float embedding per kept row (1.5 KB) and O(kept) work per row.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.lib.format import open_memmap
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
    index_dir: str | None = Field(
        None, description="folder (created if missing; one per block) for the index of kept rows as memory-mapped "
        "files: band tables, signatures, ids. In RAM the index costs ~0.7-1 KB per kept row (~0.6-0.9 GB at 1M rows) and "
        "grows with the data; in files it is page cache the kernel can evict, so the process's own memory stays "
        "flat (bench_dedup, 300k rows: anonymous memory 63 MB vs 283 MB in RAM). Same results, same speed within "
        "noise (0-5% fewer rows/s); put it on a disk, not tmpfs. Every duplicate pair goes to <index_dir>/pairs.jsonl (the stats keep "
        "the first 10,000 and note the total); the other files are deleted when the block finishes. null = RAM.")


class MinHashDedup(Block):
    """Near-duplicate removal with MinHash signatures (datasketch) and banded LSH, streaming:
    each row is queried against the rows kept so far, then inserted if kept.

    datasketch's MinHash computes the signature; the band index is lsh_index.BandIndex (numpy
    open addressing, 8 B per entry) because datasketch's in-memory MinHashLSH costs ~3.4 KB per
    row (measured: 100k rows -> 346 MB) and a dict per band still ~1.9 KB (300k rows). Band count
    and width come from datasketch's own optimiser (MinHashLSH(threshold, num_perm, weights).b/.r).
    LSH candidates are confirmed by their estimated Jaccard >= threshold (LSH alone passes some
    false positives), so the 16-bit signatures of kept rows are stored too.

    Memory: ~0.7 KB per kept row in RAM (band tables + signature + id string + pairs), so it grows
    with the data. With `index_dir` the band tables (BandIndex) and signatures (SignatureStore)
    are memory-mapped files and the ids an append-only file (IdStore): file-backed pages the
    kernel evicts under pressure, so the anonymous memory of the process stays flat; pairs stream
    to pairs.jsonl with only the first MAX_PAIRS_IN_STATS in stats.pairs. Same kept rows, same
    pairs and details in both modes (the same loop runs, only the storage differs). The index
    files are deleted at the end of run() (or when the consumer stops early); pairs.jsonl stays.
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
        if self.cfg.index_dir is None:
            yield from self._run(conversations, BandIndex(self.bands), SignatureStore(self.cfg.num_perm), [], None)
            return
        folder = Path(self.cfg.index_dir)
        folder.mkdir(parents=True, exist_ok=True)
        index = BandIndex(self.bands, directory=folder)
        sigs = SignatureStore(self.cfg.num_perm, directory=folder)
        ids = IdStore(folder)
        pairs_path = folder / "pairs.jsonl"
        self._pairs_total = 0
        try:
            with open(pairs_path, "w", encoding="utf-8") as pairs_file:
                yield from self._run(conversations, index, sigs, ids, pairs_file)
        finally:  # also when the consumer stops early: the index files go, pairs.jsonl stays
            self.stats.notes.update(pairs_total=self._pairs_total, pairs_file=str(pairs_path))
            index.close()
            sigs.close()
            ids.close()

    def _run(self, conversations: Iterable[Conversation], index: BandIndex, sigs: SignatureStore,
             ids: list[str] | IdStore, pairs_file) -> Iterator[Conversation]:
        """The dedup loop. `pairs_file` None: every pair in stats.pairs (RAM mode); else every pair
        is a JSON line there and stats.pairs keeps the first MAX_PAIRS_IN_STATS."""
        self._pairs_total = 0
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
                kept_id = ids[best]
                self.stats.drop(conv, "near_duplicate", f"estimated Jaccard {best_sim:.2f} with {kept_id}")
                pair = DupPair(conv.id, kept_id, best_sim)
                self._pairs_total += 1
                if pairs_file is not None:
                    pairs_file.write(json.dumps(pair.to_json()) + "\n")
                if pairs_file is None or len(self.stats.pairs) < MAX_PAIRS_IN_STATS:
                    self.stats.pairs.append(pair)
                continue
            index.insert(keys, len(ids), slots)
            sigs.append(sig16)
            ids.append(conv.id)
            yield conv
        self.stats.notes.update(bands=self.bands, rows_per_band=self.rows_per_band, index_rows=len(ids),
                                index_bytes=index.nbytes + sigs.nbytes)


MAX_PAIRS_IN_STATS = 10_000  # index_dir mode: pairs kept in stats.pairs (all of them go to pairs.jsonl)


class SignatureStore:
    """16-bit MinHash signatures of kept rows in 64k-row numpy chunks (no per-row object).
    Equal 32-bit values stay equal; unequal ones collide with probability 1/65536, which raises a
    Jaccard estimate by at most ~0.00002.

    `directory`: each chunk is a memory-mapped file sigs.<k>.npy there (16 MB at 128 perms)."""

    CHUNK = 1 << 16

    def __init__(self, num_perm: int, directory: str | Path | None = None):
        self.num_perm = num_perm
        self.directory = Path(directory) if directory is not None else None
        self.chunks: list[np.ndarray] = []
        self.n = 0

    def append(self, sig16: np.ndarray) -> None:
        if self.n == len(self.chunks) * self.CHUNK:
            shape = (self.CHUNK, self.num_perm)
            if self.directory is None:
                self.chunks.append(np.empty(shape, dtype=np.uint16))
            else:
                path = self.directory / f"sigs.{len(self.chunks)}.npy"
                self.chunks.append(open_memmap(path, mode="w+", dtype=np.uint16, shape=shape).view(np.ndarray))
        self.chunks[-1][self.n % self.CHUNK] = sig16
        self.n += 1

    def close(self) -> None:
        """Disk mode: unmap and delete the chunk files."""
        k, self.chunks = len(self.chunks), []
        if self.directory is not None:
            for i in range(k):
                (self.directory / f"sigs.{i}.npy").unlink(missing_ok=True)

    def __getitem__(self, row: int) -> np.ndarray:
        return self.chunks[row // self.CHUNK][row % self.CHUNK]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)


class IdStore:
    """The ids of kept rows on disk, for index_dir mode (a list of str costs ~60-80 B per row):
    ids.bin holds the UTF-8 ids back to back, ids.off the int64 end offset of each. Both are
    append-only buffered files; an id is read back (pread) only when a row duplicates it."""

    def __init__(self, directory: str | Path):
        self.paths = [Path(directory) / "ids.bin", Path(directory) / "ids.off"]
        self._data = open(self.paths[0], "w+b")
        self._off = open(self.paths[1], "w+b")
        self._end = 0
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def append(self, row_id: str) -> None:
        b = row_id.encode("utf-8")
        self._data.write(b)
        self._end += len(b)
        self._off.write(self._end.to_bytes(8, "little", signed=True))
        self.n += 1

    def __getitem__(self, row: int) -> str:
        if not 0 <= row < self.n:
            raise IndexError(row)
        self._data.flush()
        self._off.flush()
        if row == 0:
            start, end = 0, int.from_bytes(os.pread(self._off.fileno(), 8, 0), "little", signed=True)
        else:
            two = np.frombuffer(os.pread(self._off.fileno(), 16, 8 * (row - 1)), dtype="<i8")
            start, end = int(two[0]), int(two[1])
        return os.pread(self._data.fileno(), end - start, start).decode("utf-8")

    def close(self) -> None:
        """Close and delete both files."""
        for f in (self._data, self._off):
            f.close()
        for p in self.paths:
            p.unlink(missing_ok=True)


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
