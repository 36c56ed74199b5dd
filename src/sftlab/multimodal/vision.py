"""Images -> the model's image inputs, and `<image>` placeholders -> the model's image tokens.

The text of a multimodal conversation is rendered and masked by the same Renderer as text (the
placeholder is one special token, `<image>`, added to the tokenizer). `VisionInputs.expand` then
replaces each placeholder token by as many image tokens as the model's processor puts there for
that image (LLaVA with a 48 px image and 16 px patches: 9; LLaVA-1.5 at 336 px: 576), all untrained
(loss_mask 0), and records where each image's run of tokens lies (`Rendered.image_spans`) so the
length policy never cuts through one. The count is asked of the processor itself (it expands
`<image>` for one image and we count), so any processor that expands placeholders gives its own
number; tests/test_multimodal_train.py checks our expanded ids equal the processor's for a whole
conversation.

`tensors(refs)` gives the model inputs of a micro-batch's images, in the order their tokens appear
in the batch (row by row, left to right): transformers' LLaVA scatters image features into the
image-token positions in exactly that order, so packed rows need nothing more than the ids.
Each image is processed once and kept (a bounded cache: `cache_mb`), so an epoch over the same
images costs no decoding after the first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sftlab.conversation import IMAGE_PLACEHOLDER, Conversation
from sftlab.errors import DataError, Problem
from sftlab.render import Rendered


# image sizes whose token count is kept (a training set has a few; a server bounds what clients can grow)
MAX_CACHED_SIZES = 1024


@dataclass
class VisionInputs:
    processor: Any  # a transformers multimodal processor (image_processor + tokenizer + image_token)
    cache_mb: float = 1024.0
    _tokens_by_size: dict = field(default_factory=dict, repr=False)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _cache_bytes: int = 0

    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", IMAGE_PLACEHOLDER)

    @property
    def image_token_id(self) -> int:
        tok = self.processor.tokenizer
        ids = tok.encode(self.image_token, add_special_tokens=False)
        if len(ids) != 1:
            raise DataError(Problem("model", "tokenizer", f"the image token {self.image_token!r} is {len(ids)} tokens, not one",
                                    "the processor's tokenizer must have it as a special token"))
        return ids[0]

    def tokens_for(self, image) -> int:
        """Image tokens the processor puts for `image` (a PIL image): cached per image size."""
        size = image.size
        if size not in self._tokens_by_size:
            if len(self._tokens_by_size) >= MAX_CACHED_SIZES:  # a server sees whatever sizes clients send
                self._tokens_by_size.clear()
            out = self.processor(text=self.image_token, images=[image], return_tensors="pt")
            self._tokens_by_size[size] = int((out["input_ids"][0] == self.image_token_id).sum())
        return self._tokens_by_size[size]

    def _image_inputs(self, ref: str) -> dict[str, torch.Tensor]:
        if ref in self._cache:
            self._cache.move_to_end(ref)
            return self._cache[ref]
        from sftlab.multimodal.images import load_image

        out = self.processor.image_processor(images=[load_image(ref)], return_tensors="pt")
        item = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        self._cache[ref] = item
        self._cache_bytes += sum(v.numel() * v.element_size() for v in item.values())
        while self._cache_bytes > self.cache_mb * 2**20 and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= sum(v.numel() * v.element_size() for v in old.values())
        return item

    def tensors(self, refs: list[str]) -> dict[str, torch.Tensor]:
        """The model inputs (pixel_values, ...) of `refs`, concatenated in order along dim 0."""
        if not refs:
            return {}
        items = [self._image_inputs(r) for r in refs]
        return {k: torch.cat([it[k] for it in items], dim=0) for k in items[0]}

    def expand(self, rendered: list[Rendered], convs: list[Conversation]) -> list[Rendered]:
        """Each row with its placeholder tokens expanded to image tokens (untrained) and its images attached."""
        from sftlab.multimodal.images import load_image

        image_id = self.image_token_id if any(c.images for c in convs) else None
        out, problems = [], []
        sizes: dict[str, int] = {}
        for r, c in zip(rendered, convs):
            if not c.images:
                n_placeholders = r.input_ids.count(image_id) if image_id is not None else 0
                if n_placeholders:
                    problems.append(Problem(c.source or c.id, "messages", f"{n_placeholders} {self.image_token} token(s) but no images",
                                            "give the row its images, or remove the placeholder from its text"))
                out.append(r)
                continue
            counts = []
            for ref in c.images:
                if ref not in sizes:
                    sizes[ref] = self.tokens_for(load_image(ref))
                counts.append(sizes[ref])
            try:
                out.append(expand_row(r, image_id, counts, c.images))
            except ValueError as e:
                problems.append(Problem(c.source or c.id, "messages", str(e),
                                        f"write {IMAGE_PLACEHOLDER} once per image in the text; the chat template must keep it"))
        if problems:
            raise DataError(problems, header=f"{len(problems)} multimodal example(s) do not match their images:")
        return out


def expand_row(r: Rendered, image_id: int, counts: list[int], images: tuple[str, ...]) -> Rendered:
    """`r` with the i-th `image_id` token repeated counts[i] times (loss_mask 0), turn ends shifted."""
    positions = [t for t, tok in enumerate(r.input_ids) if tok == image_id]
    if len(positions) != len(counts):
        raise ValueError(f"{len(counts)} image(s) but {len(positions)} {IMAGE_PLACEHOLDER} token(s) after rendering")
    ids, mask, spans, shift = [], [], [], []
    prev = 0
    for p, n in zip(positions, counts):
        ids += r.input_ids[prev:p]
        mask += r.loss_mask[prev:p]
        spans.append((len(ids), len(ids) + n))
        ids += [image_id] * n
        mask += [0] * n
        shift.append((p, n - 1))
        prev = p + 1
    ids += r.input_ids[prev:]
    mask += r.loss_mask[prev:]
    ends = [e + sum(d for p, d in shift if p < e) for e in r.turn_ends]
    return replace(r, input_ids=ids, loss_mask=mask, turn_ends=ends, images=tuple(images), image_spans=spans)
