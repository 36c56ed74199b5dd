"""Length policy, packing and batches.

Packed rows hold several examples back to back with position_ids restarting at 0 for each;
transformers turns restarting position_ids into a block-diagonal attention (no attention across
examples) as long as the forward call gets NO attention_mask and use_cache=False
(tests/test_pack.py compares packed logits with per-example logits to prove it).

Label shift happens here and only here: labels[t] is the token to predict at position t, i.e.
input_ids[t+1] when that token is trained, else -100; it never crosses an example boundary.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Literal

import torch

from sftlab.render import Rendered

LengthPolicy = Literal["drop", "truncate", "split"]
IGNORE = -100


@dataclass
class LengthReport:
    max_len: int
    policy: str
    examples_in: int = 0
    examples_out: int = 0
    too_long: int = 0
    dropped: int = 0
    truncated: int = 0
    split_into: int = 0  # pieces produced from examples that were split
    tokens_in: int = 0
    tokens_out: int = 0
    trained_tokens_in: int = 0
    trained_tokens_out: int = 0
    partial_turns_untrained: int = 0  # assistant turns cut before their stop token: not trained
    dropped_no_trained: int = 0  # pieces left with nothing to train on
    dropped_image_cut: int = 0  # multimodal examples whose cut would go through or drop an image: dropped whole
    dropped_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.too_long:
            return f"length policy: all {self.examples_in} examples fit in {self.max_len} tokens"
        lost_trained = self.trained_tokens_in - self.trained_tokens_out
        return (
            f"length policy '{self.policy}' (max_len {self.max_len}): {self.too_long} of {self.examples_in} "
            f"examples were too long -> dropped {self.dropped}, truncated {self.truncated}, "
            f"split into {self.split_into} pieces; {self.partial_turns_untrained} partially cut assistant "
            f"turns left untrained; {self.dropped_no_trained} pieces dropped with nothing to train; "
            + (f"{self.dropped_image_cut} multimodal examples dropped (a cut would go through an image); " if self.dropped_image_cut else "")
            + f"tokens {self.tokens_in} -> {self.tokens_out}, trained tokens lost: {lost_trained} "
            f"({100 * lost_trained / max(1, self.trained_tokens_in):.2f}%)"
        )


def _ends_within(turn_ends: list[int], ascending: bool, lo: int, hi: int) -> list[int]:
    """[t for t in turn_ends if lo < t <= hi], by bisection when turn_ends ascend (they do as
    render.py makes them): O(log turns + found) instead of O(turns) per piece."""
    if not ascending:
        return [t for t in turn_ends if lo < t <= hi]
    return turn_ends[bisect.bisect_right(turn_ends, lo) : bisect.bisect_right(turn_ends, hi)]


def _cut(r: Rendered, start: int, end: int, report: LengthReport, ascending: bool | None = None) -> Rendered | None:
    """Tokens [start, end) of r. A chat assistant turn cut before its stop token is untrained.
    Work is O(end - start) (plus a bisection), so cutting a long example into pieces is linear."""
    ids, mask = r.input_ids[start:end], list(r.loss_mask[start:end])
    if ascending is None:
        ascending = _ascending(r.turn_ends)
    ends = [t - start for t in _ends_within(r.turn_ends, ascending, start, end)]
    if r.kind != "text":
        last_end = ends[-1] if ends else 0
        if any(mask[last_end:]):
            mask[last_end:] = [0] * (len(mask) - last_end)
            report.partial_turns_untrained += 1
    if start > 0:
        mask[0] = 0  # the first token of a piece has no context to be predicted from
    if not any(mask):
        report.dropped_no_trained += 1
        return None
    return Rendered(ids, mask, ends, r.id, r.source, r.kind, r.images, r.image_spans)


def _ascending(xs: list[int]) -> bool:
    return all(a <= b for a, b in zip(xs, xs[1:]))


def _last_trained(mask: list[int]) -> int:
    """Index of the last trained token (-1 if none): any(mask[end:]) is `_last_trained(mask) >= end`."""
    for i in range(len(mask) - 1, -1, -1):
        if mask[i]:
            return i
    return -1


def apply_length_policy(examples: list[Rendered], max_len: int, policy: LengthPolicy) -> tuple[list[Rendered], LengthReport]:
    rep = LengthReport(max_len=max_len, policy=policy)
    out: list[Rendered] = []
    for r in examples:
        rep.examples_in += 1
        rep.tokens_in += len(r)
        rep.trained_tokens_in += r.n_trained
        if len(r) <= max_len:
            out.append(r)
            continue
        rep.too_long += 1
        if r.images:
            # an image's tokens are one unit, and pieces after the first would lose the image they talk
            # about: a multimodal example is kept only as its first max_len tokens, and only when all
            # its images lie inside them (truncate or split); otherwise dropped, counted
            if policy != "drop" and r.image_spans[-1][1] <= max_len:
                rep.truncated += 1
                if (piece := _cut(r, 0, max_len, rep)) is not None:
                    out.append(piece)
                continue
            rep.dropped += 1
            rep.dropped_image_cut += policy != "drop"
            rep.dropped_ids.append(r.source or r.id)
            continue
        if policy == "drop":
            rep.dropped += 1
            rep.dropped_ids.append(r.source or r.id)
            continue
        if policy == "truncate":
            rep.truncated += 1
            piece = _cut(r, 0, max_len, rep)
            if piece is not None:
                out.append(piece)
            continue
        # split: at assistant-turn ends (whole turns per piece) for chat, fixed windows for text.
        # Linear in the example's length: turn ends found by bisection, "anything trained after
        # `end`" from the last trained index (a quadratic scan takes minutes on a 10 MB message).
        start, pieces = 0, 0
        ascending = _ascending(r.turn_ends)
        last_trained = _last_trained(r.loss_mask)
        while start < len(r):
            if len(r) - start <= max_len:
                end = len(r)
            else:
                fits = _ends_within(r.turn_ends, ascending, start, start + max_len) if r.kind != "text" else []
                end = fits[-1] if fits else start + max_len  # one turn longer than max_len: cut it
            piece = _cut(r, start, end, rep, ascending)
            if piece is not None:
                out.append(piece)
                pieces += 1
            if r.kind != "text" and last_trained < end:
                break  # what is left (e.g. a closing newline) has nothing to train
            start = end
        rep.split_into += pieces
    rep.examples_out = len(out)
    rep.tokens_out = sum(len(r) for r in out)
    rep.trained_tokens_out = sum(r.n_trained for r in out)
    return out, rep


def pack_bins(lengths: list[int], budget: int, order: list[int] | None = None) -> list[list[int]]:
    """Best fit: indices grouped into bins of total length <= budget, each item going to the
    fullest bin it still fits in (least remaining space).

    `order=None`: items placed longest first (best-fit-decreasing, ~99% full bins; but the bins
    then hold examples of alike lengths: the longest few together, the shortest together).
    `order` given (a shuffled permutation): items placed in that order, so a bin's examples are a
    random sample like a random batch (PackedDataset's default; 97-99% full on chat length mixes,
    see tests/test_pack_mixing.py). An item longer than `budget` gets a bin of its own (a row of one
    over-long example, up to data.max_len; PackedDataset counts and reports them).
    """
    if order is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    shortest = min(lengths, default=0)
    remaining: list[int] = []  # sorted remaining capacities of the bins that can still take an item
    bin_of: list[int] = []  # parallel: bin index for each entry of `remaining`
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > budget:
            bins.append([i])
            continue
        k = bisect.bisect_left(remaining, n)
        if k < len(remaining):
            cap, b = remaining.pop(k), bin_of.pop(k)
        else:
            cap, b = budget, len(bins)
            bins.append([])
        bins[b].append(i)
        cap -= n
        if cap >= shortest:  # a bin no item can fit into is closed: keeps the search list short
            k = bisect.bisect_left(remaining, cap)
            remaining.insert(k, cap)
            bin_of.insert(k, b)
    return bins


def shifted_labels(r: Rendered) -> list[int]:
    """labels[t] = input_ids[t+1] if that token is trained, else -100. The one label shift."""
    ids, mask = r.input_ids, r.loss_mask
    return [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], already shifted (see module docstring)
    position_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None = None  # only for padded batches
    n_examples: int = 0
    n_tokens: int = 0  # real (non-pad) tokens
    extra: dict = field(default_factory=dict)  # further model inputs: a multimodal batch's pixel_values, in token order

    @property
    def n_trained(self) -> int:
        return int((self.labels != IGNORE).sum())

    def model_inputs(self) -> dict:
        d = {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False}
        if self.attention_mask is not None:
            d["attention_mask"] = self.attention_mask
        return {**d, **self.extra}


def collate_packed(examples: list[Rendered]) -> Batch:
    """One row: examples back to back, position_ids restarting, no attention_mask."""
    ids, labels, pos = [], [], []
    for r in examples:
        ids += r.input_ids
        labels += shifted_labels(r)
        pos += range(len(r))
    t = lambda x: torch.tensor([x], dtype=torch.long)  # noqa: E731
    return Batch(t(ids), t(labels), t(pos), None, len(examples), len(ids))


def collate_padded(examples: list[Rendered], pad_id: int) -> Batch:
    """Right-padded rows with an attention mask (the classic layout; kept for comparison)."""
    width = max(len(r) for r in examples)
    B = len(examples)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    labels = torch.full((B, width), IGNORE, dtype=torch.long)
    att = torch.zeros((B, width), dtype=torch.long)
    for b, r in enumerate(examples):
        n = len(r)
        ids[b, :n] = torch.tensor(r.input_ids)
        labels[b, :n] = torch.tensor(shifted_labels(r))
        att[b, :n] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, labels, pos, att, B, int(att.sum()))


PackOrder = Literal["shuffled", "by_length", "as_given"]


def next_fit_bins(lengths: list[int], budget: int) -> list[list[int]]:
    """Items in their order, a new bin whenever the next one does not fit: the order is kept
    across bins (bin k holds only items before those of bin k+1). An item over `budget` gets its own bin."""
    bins: list[list[int]] = []
    used = budget + 1
    for i, n in enumerate(lengths):
        if not bins or used + n > budget:
            bins.append([])
            used = 0
        bins[-1].append(i)
        used += n
    return bins


@dataclass
class PackedDataset:
    """The training stream: rows of examples, in a seeded random order each epoch.

    Packed (`padded=False`): rows of <= `budget` tokens made once by best fit. `order="shuffled"`
    (default) places the examples in a seeded random order, so each row is a random sample of the
    data, like a random batch; `"by_length"` is best-fit-decreasing over the whole set, whose rows
    hold examples of alike lengths (and so alike kinds): measured worse per epoch than random
    batches (benchmarks/bench_quality.py, docs/quality.md). The rows' order is reshuffled each epoch.
    Padded (`padded=True`): each epoch the examples are reshuffled and cut into batches of
    `batch_size`, as a shuffling DataLoader does (the same groups every epoch, consecutive rows of
    the file, would be correlated batches).
    `order="as_given"` (data.order: as_given / curriculum): the examples' own order is the training
    order: rows filled in sequence (next fit), padded batches consecutive, nothing reshuffled.
    `bins` (the rows as made, epoch-independent) serve evaluation, which needs no order.
    """

    examples: list[Rendered]
    budget: int
    padded: bool = False
    batch_size: int = 1  # examples per batch in padded mode
    pad_id: int = 0
    seed: int = 0
    order: PackOrder = "shuffled"
    # multimodal data: sftlab.multimodal.vision.VisionInputs, which gives each batch its images' inputs
    vision: object | None = None
    bins: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        lengths = [len(r) for r in self.examples]
        if self.padded:
            idx = list(range(len(self.examples)))
            self.bins = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        elif self.order == "as_given":
            self.bins = next_fit_bins(lengths, self.budget)
        elif self.order == "shuffled":
            placement = list(range(len(self.examples)))
            random.Random(f"sftlab-pack-{self.seed}").shuffle(placement)
            self.bins = pack_bins(lengths, self.budget, placement)
        else:
            self.bins = pack_bins(lengths, self.budget)
        self.oversize_rows = 0 if self.padded else sum(1 for b in self.bins if len(b) == 1 and lengths[b[0]] > self.budget)

    def __len__(self) -> int:
        return len(self.bins)

    def epoch_order(self, epoch: int) -> list[int]:
        """The order of `bins` in `epoch` (packed mode; a pure function of seed and epoch)."""
        order = list(range(len(self.bins)))
        if self.order != "as_given":
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        """The micro-batches of `epoch` in training order, as lists of example indices.
        Same count every epoch (len(self)), so the step number alone fixes the data position."""
        if not self.padded:
            return [self.bins[i] for i in self.epoch_order(epoch)]
        idx = list(range(len(self.examples)))
        if self.order != "as_given":
            random.Random(self.seed * 1_000_003 + epoch).shuffle(idx)
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def collate(self, example_indices: list[int]) -> Batch:
        items = [self.examples[i] for i in example_indices]
        batch = collate_padded(items, self.pad_id) if self.padded else collate_packed(items)
        if self.vision is not None:  # rows in order, each row's images in order: the order of their tokens
            batch.extra = self.vision.tensors([ref for r in items for ref in r.images])
        return batch

    def batch(self, bin_index: int) -> Batch:
        return self.collate(self.bins[bin_index])

    def fill_ratio(self) -> float:
        if self.padded:  # of the batches training sees (epoch 0), not the file-order ones
            real = sum(len(r) for r in self.examples)
            return real / max(1, sum(max(len(self.examples[i]) for i in b) * len(b) for b in self.epoch_rows(0)))
        return sum(len(r) for r in self.examples) / max(1, sum(max(self.budget, sum(len(self.examples[i]) for i in b)) for b in self.bins))
