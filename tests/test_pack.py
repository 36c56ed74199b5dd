"""Packing is exact: packed logits equal one-by-one logits; length policies count everything."""

import random

import pytest
import torch

from sftlab.conversation import Conversation
from sftlab.pack import (
    IGNORE,
    PackedDataset,
    apply_length_policy,
    collate_packed,
    collate_padded,
    pack_bins,
    shifted_labels,
)
from sftlab.render import Rendered, Renderer
from helpers import random_rendered
from tiny import make_model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_one_by_one(attn):
    model = make_model(attn=attn)
    exs = random_rendered(5, seed=1)
    batch = collate_packed(exs)
    with torch.no_grad():
        packed = model(**batch.model_inputs()).logits[0]
        off = 0
        for r in exs:
            alone = model(input_ids=torch.tensor([r.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[off : off + len(r)], alone, atol=1e-5, rtol=1e-4)
            off += len(r)


def test_packed_logits_differ_if_attention_mask_is_passed():
    """Guards the fact our packing relies on: a 2-D mask makes examples see each other."""
    model = make_model()
    exs = random_rendered(3, seed=2)
    b = collate_packed(exs)
    with torch.no_grad():
        good = model(**b.model_inputs()).logits
        leaky = model(input_ids=b.input_ids, attention_mask=torch.ones_like(b.input_ids), use_cache=False).logits
    second = slice(len(exs[0]), len(exs[0]) + len(exs[1]))
    assert not torch.allclose(good[0, second], leaky[0, second], atol=1e-4)


def test_packed_equals_padded_batch():
    model = make_model()
    exs = random_rendered(4, seed=3)
    packed, padded = collate_packed(exs), collate_padded(exs, pad_id=0)
    with torch.no_grad():
        lp = model(**packed.model_inputs()).logits[0]
        lq = model(**padded.model_inputs()).logits
    off = 0
    for b, r in enumerate(exs):
        torch.testing.assert_close(lp[off : off + len(r)], lq[b, : len(r)], atol=1e-5, rtol=1e-4)
        off += len(r)
    assert packed.n_trained == padded.n_trained


def test_labels_shift_once_and_never_cross_examples():
    a = Rendered([10, 11, 12], [0, 1, 1], [3])
    b = Rendered([20, 21], [0, 1], [2])
    assert shifted_labels(a) == [11, 12, IGNORE]
    batch = collate_packed([a, b])
    assert batch.labels.tolist() == [[11, 12, IGNORE, 21, IGNORE]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]


def test_best_fit_decreasing_respects_budget_and_keeps_everything():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(2000)]
    bins = pack_bins(lengths, 1024)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    lower_bound = -(-sum(lengths) // 1024)
    assert len(bins) <= lower_bound * 1.03  # BFD is within a few % of optimal on such mixes


def test_packed_dataset_epoch_order_is_seeded():
    ds = PackedDataset(random_rendered(50), budget=128, seed=7)
    assert ds.epoch_order(0) == PackedDataset(random_rendered(50), budget=128, seed=7).epoch_order(0)
    assert ds.epoch_order(0) != ds.epoch_order(1)
    assert 0.8 < ds.fill_ratio() <= 1.0


CHAT = Conversation.from_messages(
    [
        {"role": "user", "content": "Reverse apple."},
        {"role": "assistant", "content": "elppa " * 6},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "The answer is 5."},
    ]
)


def test_length_policies_count_and_keep_stop_tokens(tokenizer):
    rd = Renderer(tokenizer)
    r = rd.render(CHAT)
    stop = rd.stop_token_id
    max_len = r.turn_ends[1] - 2  # cuts inside the second answer, before its stop token
    assert len(r) > max_len

    kept, rep = apply_length_policy([r], max_len, "drop")
    assert kept == [] and rep.dropped == 1 and rep.too_long == 1 and "dropped 1" in rep.summary()

    kept, rep = apply_length_policy([r], max_len, "truncate")
    (t,) = kept
    assert len(t) == max_len and rep.truncated == 1 and rep.partial_turns_untrained == 1
    # every trained run still ends with a trained stop token
    trained_idx = [i for i, m in enumerate(t.loss_mask) if m]
    assert t.input_ids[trained_idx[-1]] == stop
    assert rep.trained_tokens_out == t.n_trained < rep.trained_tokens_in

    kept, rep = apply_length_policy([r], max_len, "split")
    assert len(kept) == 2 and rep.split_into == 2
    assert all(len(p) <= max_len for p in kept)
    assert sum(p.n_trained for p in kept) == r.n_trained  # nothing lost: cut at turn ends
    for p in kept:
        last = max(i for i, m in enumerate(p.loss_mask) if m)
        assert p.input_ids[last] == stop


def test_text_rows_split_into_windows(tokenizer):
    conv = Conversation.document("The quick brown fox. " * 20)
    r = Renderer(tokenizer).render(conv)
    kept, rep = apply_length_policy([r], 16, "split")
    assert sum(len(p) for p in kept) == len(r)
    assert rep.trained_tokens_out == r.n_trained - (len(kept) - 1)  # each new window's first token has no context
