"""Data preparation for training: load -> render + mask -> pre-flight -> length policy -> pack.

Every stage reports what it did; nothing is dropped without being counted here.
Rendered rows are cached on disk (token_cache.py) unless `data.cache: false`; the pre-flight checks
run on the rows either way (on a cache hit they cost no rendering).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from sftlab.config import DataConfig, TrainConfig
from sftlab.conversation import Conversation
from sftlab.data.config import DataSourceConfig
from sftlab.errors import DataError, Problem, TemplateError
from sftlab.pack import LengthReport, PackedDataset, apply_length_policy
from sftlab.render import Rendered, Renderer, TokenShare, preflight
from sftlab.token_cache import TokenCache, cache_root

def load_source(src: DataSourceConfig, on_error: str) -> tuple[list[Conversation], str]:
    """One configured source -> conversations, plus a one-line summary of what loading did."""
    res = src.load(on_error=on_error)  # format, columns, split, streaming, limit, rejects: as the source says
    return res.conversations, f"{src.path}: " + res.stats.summary().replace("\n", "; ")


def load_sources(sources: list[DataSourceConfig], on_error: str, seed: int) -> tuple[list[Conversation], list[str]]:
    """All sources, each repeated: repeat r keeps round(r * n) rows of a source of n rows
    (r > 1 repeats rows; r < 1 subsamples)."""
    out: list[Conversation] = []
    notes: list[str] = []
    rng = random.Random(seed)
    for src in sources:
        convs, note = load_source(src, on_error)
        if src.repeat != 1.0:
            whole, part = divmod(round(src.repeat * len(convs)), max(1, len(convs)))
            convs = convs * whole + rng.sample(convs, part)
            note += f" -> repeat {src.repeat}: {len(convs)} rows"
        out += convs
        notes.append(note)
    return out, notes


def labels_of(r: Rendered) -> int:
    """Trained tokens as the loss counts them: labels (pack.shifted_labels), i.e. trained tokens after the first."""
    return sum(r.loss_mask[1:])


def add_replay(renderer: Renderer, replay, rendered: list[Rendered], data: DataConfig, cache, seed: int,
               store_cache: bool = True) -> tuple[list[Rendered], str, str]:
    """`rendered` + pieces of the replay text making up `replay.fraction` of all trained tokens (labels):
    replay = round(f / (1 - f) * instruction labels), exactly (the last piece is cut). Pieces (the text
    split at data.max_len) are drawn in a seeded random order, the whole text again (reshuffled) when
    one pass is not enough. Shuffled data order: appended (the packer places them at random);
    as_given / curriculum: spread evenly through the ordered stream. Returns (rows, note, cache status)."""
    from sftlab.pack import _cut

    convs = replay.load(on_error=data.on_error).conversations
    not_text = [c for c in convs if c.kind != "text"]
    if not convs or not_text:
        raise DataError(Problem(replay.path, "data.replay", f"{len(not_text)} of {len(convs)} replay rows are not plain text"
                                if convs else "no replay text was loaded",
                                "point data.replay.path at .txt files or JSONL with a `text` field (format: text)"))
    rows, status = render_checked(renderer, convs, "render replay", cache, check=False, store=store_cache)
    pieces, _ = apply_length_policy(rows, data.max_len, "split")
    pieces = [p for p in pieces if labels_of(p) > 0]
    if not pieces:
        raise DataError(Problem(replay.path, "data.replay", "the replay text has no trainable tokens", "give longer documents"))
    have = sum(labels_of(r) for r in rendered)
    need = round(replay.fraction / (1.0 - replay.fraction) * have)
    rng = random.Random(f"sftlab-replay-{seed}")
    chosen: list[Rendered] = []
    got, passes = 0, 0
    while got < need:
        order = list(range(len(pieces)))
        rng.shuffle(order)
        passes += 1
        for i in order:
            p, n = pieces[i], labels_of(pieces[i])
            if got + n > need:  # cut: the first k+1 tokens carry k labels (every text token is trained)
                k = need - got
                end = next(j for j in range(1, len(p) + 1) if sum(p.loss_mask[1:j]) == k)
                p = _cut(p, 0, end, LengthReport(data.max_len, "truncate"))
                n = k
            chosen.append(p)
            got += n
            if got >= need:
                break
    if data.order == "shuffled":
        out = rendered + chosen
    else:  # spread evenly: replay piece j goes after instruction row round((j + 1) * len / (m + 1))
        out, m, j = [], len(chosen), 0
        for i, r in enumerate(rendered):
            out.append(r)
            while j < m and round((j + 1) * len(rendered) / (m + 1)) <= i + 1:
                out.append(chosen[j])
                j += 1
        out += chosen[j:]
    total = have + got
    note = (f"replay {replay.path}: {len(chosen)} pieces, {got} trained tokens = {got / max(1, total):.1%} of {total} "
            f"(data.replay.fraction {replay.fraction})" + (f"; the text was cycled {passes} times (too short for the fraction)" if passes > 1 else ""))
    return out, note, status


def data_fingerprint(rendered: list[Rendered]) -> str:
    h = hashlib.sha256()
    for r in rendered:
        h.update(len(r.input_ids).to_bytes(4, "little"))
        h.update(bytes(str(r.input_ids), "ascii"))
        h.update(bytes(r.loss_mask))
        if r.images:  # which images (by reference), not their pixels: a resume refuses other images, not re-encoded ones
            h.update("\n".join(r.images).encode())
    return h.hexdigest()[:16]


@dataclass
class Prepared:
    train: PackedDataset
    eval: PackedDataset | None
    length_report: LengthReport
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def summary(self) -> str:
        lines = list(self.notes)
        lines.append(self.length_report.summary())
        tr = self.train
        if tr.padded:
            layout = f"{len(tr)} padded batches of {tr.batch_size} examples, reshuffled each epoch (non-pad {tr.fill_ratio():.1%})"
        else:
            layout = (f"{len(tr)} packed rows of <= {tr.budget} tokens (train.tokens_per_batch), examples placed in "
                      f"{ {'shuffled': 'a seeded random order', 'by_length': 'length order'}.get(tr.order, 'the data order, never reshuffled')} "
                      f"({'data.pack_order: ' + tr.order if tr.order != 'as_given' else 'data.order'}; fill {tr.fill_ratio():.1%})")
            if tr.oversize_rows:
                layout += (f"; {tr.oversize_rows} example(s) longer than tokens_per_batch (up to data.max_len {tr.examples and max(len(r) for r in tr.examples)}) "
                           "have a row of their own: raise train.tokens_per_batch to data.max_len to pack them with others")
        lines.append(f"train: {len(tr.examples)} examples, {TokenShare.of(tr.examples).summary()}; {layout}")
        if self.eval is not None:
            lines.append(f"eval: {len(self.eval.examples)} examples in {len(self.eval)} batches")
        return "\n".join(lines)


def _check_rendered(convs: list[Conversation], results: list) -> list[Rendered]:
    problems = [Problem(c.source or c.id, "messages", str(r)) for c, r in zip(convs, results) if isinstance(r, TemplateError)]
    if problems:
        raise DataError(problems, header=f"{len(problems)} example(s) could not be rendered with the chat template:")
    return results


PREFLIGHT_ROWS = 200


def render_checked(renderer: Renderer, convs: list[Conversation], desc: str, cache: TokenCache | None,
                   check: bool, preflight_rows: int | None = PREFLIGHT_ROWS, store: bool = True) -> tuple[list[Rendered], str]:
    """Rendered rows of `convs` (from the cache when it has them), and what the cache did.

    `check`: pre-flight on the first `preflight_rows` rows (None: every row, as `sftlab train --dry-run`
    does), before the rest is rendered, so a bad template fails in seconds on a large data set. On a
    cache hit the checks run on cached rows. `store`: False leaves a cache miss unstored (the dry run
    writes nothing)."""
    head_rows = len(convs) if preflight_rows is None else preflight_rows
    key = cache.key(convs) if cache is not None else None
    status = "off (the tokenizer has no `tokenizers` backend to fingerprint)" if cache is not None and key is None else ""
    if key is not None:
        rows, status = cache.load(key, convs)
        if rows is not None:
            if check:
                report = preflight(renderer, convs, head_rows, rendered=rows)
                if not report.ok:
                    raise TemplateError(report.format())
            return rows, f"hit {key[:12]}"
    with tqdm(total=len(convs), desc=desc, unit="ex", leave=False, mininterval=1.0) as bar:
        head = renderer.render_batch(convs[:head_rows], progress=bar)
        if check:
            report = preflight(renderer, convs, head_rows, rendered=head)
            if not report.ok:
                raise TemplateError(report.format())
        rows = _check_rendered(convs, head + renderer.render_batch(convs[head_rows:], progress=bar))
    if key is not None:
        status = f"{status}, {cache.store(key, rows) if store else 'not stored'} {key[:12]}"
    return rows, status


def with_images(rendered: list[Rendered], convs: list[Conversation], vision, where: str) -> list[Rendered]:
    """Rows with their images expanded to image tokens (multimodal runs); text-only runs refuse images."""
    if vision is not None:
        return vision.expand(rendered, convs)
    with_imgs = [c for c in convs if c.images]
    if with_imgs:
        first = with_imgs[0]
        raise DataError(Problem(first.source or first.id, "images",
                                f"{len(with_imgs)} example(s) of {where} have images, but the model is a text-only language model",
                                "train a vision-language model: set multimodal.vision_encoder (e.g. builtin:tiny-siglip) to "
                                "assemble one, or point model.name at one (docs/multimodal.md)"))
    return rendered


def prepare(renderer: Renderer, data: DataConfig, train_cfg: TrainConfig, pad_id: int, *,
            preflight_rows: int | None = PREFLIGHT_ROWS, store_cache: bool = True, vision=None) -> Prepared:
    """`preflight_rows`, `store_cache`: see render_checked (`sftlab train --dry-run`: every row, nothing stored).
    `vision`: a multimodal run's sftlab.multimodal.vision.VisionInputs: each rendered row's `<image>`
    tokens are expanded to the model's image tokens (before the length policy, which counts them) and
    the batches carry the images' pixel inputs. Without it, data with images is refused."""
    convs, notes = load_sources(data.train, data.on_error, train_cfg.seed)
    if data.eval:
        eval_convs, eval_notes = load_sources(data.eval, data.on_error, train_cfg.seed)
        notes += [f"eval {n}" for n in eval_notes]
    elif data.eval_fraction > 0:
        order = list(range(len(convs)))
        random.Random(train_cfg.seed).shuffle(order)
        n_eval = max(1, int(len(convs) * data.eval_fraction))
        eval_convs = [convs[i] for i in order[:n_eval]]
        convs = [convs[i] for i in sorted(order[n_eval:])]
        notes.append(f"held out {n_eval} examples ({data.eval_fraction:.0%}) for eval loss")
    else:
        eval_convs = []
    if not convs:
        raise DataError(Problem("data.train", "", "no training examples were loaded", "check the paths and formats"))
    if data.order == "curriculum":
        from sftlab.curate.mix import curriculum_order

        convs = curriculum_order(convs, data.order_key)
        notes.append(f"data.order: curriculum by meta.{data.order_key}, ascending ({convs[0].meta[data.order_key]} .. "
                     f"{convs[-1].meta[data.order_key]}); rows filled in that order, never reshuffled")
    elif data.order == "as_given":
        notes.append("data.order: as_given: the sources' order; rows filled in that order, never reshuffled")

    cache = TokenCache(renderer, cache_root()) if data.cache else None
    rendered, train_status = render_checked(renderer, convs, "render train", cache, check=True, preflight_rows=preflight_rows,
                                            store=store_cache)
    statuses = [f"train {train_status}"]
    rendered = with_images(rendered, convs, vision, "data.train")
    rendered, length_report = apply_length_policy(rendered, data.max_len, data.length_policy)
    if data.replay is not None:
        rendered, replay_note, replay_status = add_replay(renderer, data.replay, rendered, data, cache, train_cfg.seed, store_cache)
        notes.append(replay_note)
        statuses.append(f"replay {replay_status}")
    # rows hold up to tokens_per_batch tokens, so a step is the size the config says; an example
    # longer than that (up to max_len) gets a row of its own, counted in the summary
    budget = train_cfg.tokens_per_batch
    train = PackedDataset(rendered, budget, padded=not data.packing, batch_size=train_cfg.batch_size, pad_id=pad_id,
                          seed=train_cfg.seed, order=data.pack_order if data.order == "shuffled" else "as_given", vision=vision)
    eval_ds = None
    if eval_convs:
        ev, eval_status = render_checked(renderer, eval_convs, "render eval", cache, check=False, store=store_cache)
        statuses.append(f"eval {eval_status}")
        ev = with_images(ev, eval_convs, vision, "data.eval")
        ev, ev_report = apply_length_policy(ev, data.max_len, data.length_policy)
        if ev_report.too_long:
            notes.append("eval " + ev_report.summary())
        eval_ds = PackedDataset(ev, max(budget, data.max_len), padded=not data.packing, batch_size=train_cfg.batch_size, pad_id=pad_id,
                                seed=0, order="by_length", vision=vision)  # eval: fewest rows, order irrelevant
    notes.append(f"token cache ({cache_root()}): " + "; ".join(statuses) if cache is not None else "token cache: off (data.cache: false)")
    return Prepared(train, eval_ds, length_report, notes, data_fingerprint(rendered))
