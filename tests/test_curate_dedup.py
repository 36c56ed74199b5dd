"""Dedup blocks remove planted duplicates, keep distinct rows, keep the first, and record pairs."""

import random

from sftlab.conversation import Conversation
from sftlab.curate.blocks import normalise
from sftlab.curate.dedup import ExactDedup, MinHashDedup, SemanticDedup, shingle_hashes


def conv(prompt: str, response: str, **kw) -> Conversation:
    return Conversation.from_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                      **kw)


def test_normalise_lowercases_strips_punctuation_and_collapses_space():
    assert normalise("  Hello,   WORLD!!\n\tHow's it going? ") == "hello world how s it going"


def test_exact_dedup_matches_normalised_text_and_keeps_first():
    a = conv("What is 2+2?", "It is 4.")
    a_variant = conv("what is 2 + 2", "It   is 4")  # same after normalisation
    b = conv("What is 2+3?", "It is 5.")
    ex = ExactDedup()
    kept = list(ex([a, b, a_variant, a]))
    assert kept == [a, b]
    assert ex.stats.dropped_by_reason == {"exact_duplicate": 2}
    assert [(p.removed_id, p.kept_id, p.similarity) for p in ex.stats.pairs] == [(a_variant.id, a.id, 1.0),
                                                                               (a.id, a.id, 1.0)]


def test_exact_dedup_keeps_message_boundaries():
    one = Conversation.from_messages([{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}])
    two = Conversation.from_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c"}])
    assert len(list(ExactDedup()([one, two]))) == 2


def _sentence(rng: random.Random, n: int) -> list[str]:
    vocab = [f"w{i}" for i in range(3000)]
    return rng.choices(vocab, k=n)


def test_minhash_removes_near_duplicates_and_keeps_distinct():
    rng = random.Random(0)
    originals = [_sentence(rng, 80) for _ in range(40)]
    rows = [conv(" ".join(t[:30]), " ".join(t[30:]), id=f"orig{i}") for i, t in enumerate(originals)]
    planted = []
    for i in range(0, 40, 4):  # one word changed near the end: 5-gram Jaccard ~0.94
        t = list(originals[i])
        t[77] = "changed"
        planted.append(conv(" ".join(t[:30]), " ".join(t[30:]), id=f"dup{i}"))
    md = MinHashDedup()
    kept = list(md(rows + planted))
    assert kept == rows
    assert md.stats.dropped_by_reason == {"near_duplicate": len(planted)}
    pairs = {p.removed_id: (p.kept_id, p.similarity) for p in md.stats.pairs}
    assert set(pairs) == {c.id for c in planted}
    for i in range(0, 40, 4):
        kept_id, sim = pairs[f"dup{i}"]
        assert kept_id == f"orig{i}" and 0.8 <= sim <= 1.0


def test_minhash_threshold_is_configurable():
    rng = random.Random(1)
    t = _sentence(rng, 60)
    half = t[:30] + _sentence(rng, 30)  # Jaccard of 5-grams ~0.3
    a, b = conv(" ".join(t[:10]), " ".join(t[10:])), conv(" ".join(half[:10]), " ".join(half[10:]))
    assert len(list(MinHashDedup()([a, b]))) == 2
    assert len(list(MinHashDedup(threshold=0.2, lsh_weights=(0.01, 0.99))([a, b]))) == 1


def test_shingles_of_short_text_and_determinism():
    assert len(shingle_hashes("one two", 5)) == 1
    assert shingle_hashes("a b c d e f", 5).tolist() == shingle_hashes("a b c d e f", 5).tolist()
    assert len(shingle_hashes("a b c d e f", 5)) == 2


def test_semantic_dedup_removes_paraphrases_keeps_unrelated():
    rows = [
        conv("How do I reverse a list in Python?", "Use my_list[::-1] or my_list.reverse()."),
        conv("What is the capital of France?", "The capital of France is Paris."),
        conv("Give me a recipe for pancakes.", "Mix flour, eggs and milk, then fry in a pan."),
    ]
    paraphrases = [
        conv("How can I reverse a list in Python?", "Use my_list[::-1] or call my_list.reverse()."),
        conv("What's the capital city of France?", "Paris is the capital of France."),
    ]
    sd = SemanticDedup(threshold=0.9, batch_size=2)  # batch smaller than the input: order across batches
    kept = list(sd(rows + paraphrases))
    assert kept == rows
    assert sd.stats.dropped_by_reason == {"semantic_duplicate": 2}
    assert [(p.removed_id, p.kept_id) for p in sd.stats.pairs] == [(paraphrases[0].id, rows[0].id),
                                                                   (paraphrases[1].id, rows[1].id)]
    assert all(0.9 <= p.similarity <= 1.0 + 1e-6 for p in sd.stats.pairs)


def test_band_index_finds_every_key_after_growth_and_keeps_first_writer():
    import numpy as np

    from sftlab.curate.lsh_index import BandIndex, band_keys

    rng = np.random.default_rng(0)
    index = BandIndex(bands=3, capacity=8)  # grows several times below
    all_keys = rng.integers(0, 2**32, size=(500, 3), dtype=np.uint32)
    all_keys[7, 1] = all_keys[3, 1]  # row 7 shares band 1 with row 3
    for row, keys in enumerate(all_keys):
        index.insert(keys, row)
    assert index.capacity >= 500 / 0.7
    for row, keys in enumerate(all_keys):
        found, _ = index.query(keys)
        expected = [row, 3 if row == 7 else row, row]
        assert found.tolist() == expected
    missing, _ = index.query(rng.integers(0, 2**32, size=3, dtype=np.uint32))
    assert missing.tolist() == [-1, -1, -1]
    sig = rng.integers(0, 2**32, size=128, dtype=np.uint64).astype(np.uint32)
    assert band_keys(sig, 14, 9).tolist() == band_keys(sig.copy(), 14, 9).tolist()
    other = sig.copy()
    other[0] += 1  # changes band 0 only
    diff = band_keys(sig, 14, 9) != band_keys(other, 14, 9)
    assert diff.tolist() == [True] + [False] * 13


def test_ascii_fast_path_of_normalise_matches_the_unicode_path():
    import string
    import unicodedata

    from sftlab.curate.blocks import _PUNCT, _SPACE

    def unicode_path(t):
        t = unicodedata.normalize("NFKC", t).lower()
        return _SPACE.sub(" ", _PUNCT.sub(" ", t)).strip()

    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40)))
        assert normalise(text) == unicode_path(text), repr(text)
    assert normalise("Ｆｕｌｌ-width Café!") == "full width café"  # non-ASCII: NFKC path


def _planted_rows(n_orig: int, seed: int = 0) -> list[Conversation]:
    """n_orig distinct rows (non-ASCII ids too) and after every 7th a near-duplicate of a recent
    one (one word changed), plus some exact repeats: dups of dups and ties included."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    rows, recent = [], []
    for i in range(n_orig):
        t = rng.choices(vocab, k=60)
        recent = (recent + [t])[-50:]
        rows.append(conv(" ".join(t[:20]), " ".join(t[20:]), id=f"orig-é{i}"))
        if i % 7 == 3:
            d = list(rng.choice(recent))
            d[rng.randrange(60)] = "changed"
            rows.append(conv(" ".join(d[:20]), " ".join(d[20:]), id=f"dup{i}"))
        if i % 50 == 10:
            rows.append(conv(" ".join(t[:20]), " ".join(t[20:]), id=f"same{i}"))
    return rows


def _pair_list(block):
    return [(p.removed_id, p.kept_id, p.similarity) for p in block.stats.pairs]


def test_minhash_index_dir_gives_the_same_result_as_ram_and_cleans_up(tmp_path, monkeypatch):
    from sftlab.curate.lsh_index import BandIndex

    monkeypatch.setattr(BandIndex, "GROW_CHUNK", 500)  # disk mode re-places in pieces: other slot layout
    rows = _planted_rows(2600)
    ram = MinHashDedup()
    kept_ram = [c.id for c in ram(rows)]
    disk = MinHashDedup(index_dir=str(tmp_path / "idx"))
    kept_disk = [c.id for c in disk(rows)]
    assert len(kept_ram) > 2048 + 100  # BandIndex (capacity 4096, load 1/2) grew at least once
    assert kept_disk == kept_ram
    assert _pair_list(disk) == _pair_list(ram)
    assert len(ram.stats.pairs) > 300 and any(p.kept_id.startswith("orig-é") for p in ram.stats.pairs)
    assert disk.stats.samples == ram.stats.samples  # the detail strings
    assert disk.stats.dropped_by_reason == ram.stats.dropped_by_reason
    for key in ("bands", "rows_per_band", "index_rows", "index_bytes"):
        assert disk.stats.notes[key] == ram.stats.notes[key]
    assert "pairs_total" not in ram.stats.notes
    assert disk.stats.notes["pairs_total"] == len(ram.stats.pairs)
    assert [p.name for p in (tmp_path / "idx").iterdir()] == ["pairs.jsonl"]  # index files deleted


def test_minhash_index_dir_writes_every_pair_and_caps_stats(tmp_path, monkeypatch):
    import json

    from sftlab.curate import dedup

    monkeypatch.setattr(dedup, "MAX_PAIRS_IN_STATS", 3)
    rows = _planted_rows(200, seed=1)
    ram = MinHashDedup()
    list(ram(rows))
    assert len(ram.stats.pairs) > 3  # RAM mode is not capped
    md = MinHashDedup(index_dir=str(tmp_path))
    list(md(rows))
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [p.to_json() for p in ram.stats.pairs]
    assert _pair_list(md) == _pair_list(ram)[:3]
    assert md.stats.notes["pairs_total"] == len(ram.stats.pairs)
    assert md.stats.notes["pairs_file"] == str(tmp_path / "pairs.jsonl")
    assert md.stats.dropped_by_reason == ram.stats.dropped_by_reason


def test_minhash_index_dir_cleans_up_when_the_consumer_stops_early(tmp_path):
    md = MinHashDedup(index_dir=str(tmp_path))
    gen = md(_planted_rows(100))
    for _ in range(20):
        next(gen)
    assert len(list(tmp_path.iterdir())) > 1  # tables, signatures, ids, pairs
    gen.close()
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]
    assert md.stats.notes["pairs_file"] == str(tmp_path / "pairs.jsonl")


def test_band_index_on_disk_answers_like_ram_and_replaces_its_files(tmp_path, monkeypatch):
    import numpy as np

    from sftlab.curate.lsh_index import BandIndex

    monkeypatch.setattr(BandIndex, "GROW_CHUNK", 5)  # many pieces per band in _grow
    rng = np.random.default_rng(1)
    all_keys = rng.integers(0, 2**32, size=(700, 4), dtype=np.uint32)
    all_keys[9:400:7, 2] = all_keys[3, 2]  # a key shared by many rows: row 3 keeps it
    all_keys[:, 3] &= np.uint32(0xFF)  # band 3: many equal keys and long probe chains
    ram, disk = BandIndex(bands=4, capacity=8), BandIndex(bands=4, capacity=8, directory=tmp_path)
    for row, keys in enumerate(all_keys):
        a, b = ram.query(keys)[0], disk.query(keys)[0]
        assert a.tolist() == b.tolist()
        ram.insert(keys, row)
        disk.insert(keys, row)
    assert disk.capacity == ram.capacity >= 1024
    for keys in np.concatenate([all_keys, rng.integers(0, 2**32, size=(50, 4), dtype=np.uint32)]):
        assert ram.query(keys)[0].tolist() == disk.query(keys)[0].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"band_keys.{disk.capacity}.npy",
                                                           f"band_rows.{disk.capacity}.npy"]
    disk.close()
    assert list(tmp_path.iterdir()) == []
