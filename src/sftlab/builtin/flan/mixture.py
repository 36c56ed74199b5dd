"""Training and evaluation conversations from the FLAN-style registry (sftlab.builtin.flan), FLAN's way.

    train, evaluation, report = build(FlanMixture(seed=0))        # or build(cfg, tokenizer=tok)
    print(report.summary())

Evaluation (`build_eval`): every family of the registry, `n_eval` zero-shot examples each (one user
turn, or a multi-turn template's turns, then the graded answer), no system message. meta: suite "flan",
family, cluster, split (flan.split_of), answer, template (index). It does not depend on the training
knobs: a family's examples are drawn once, as one pool, from `Random(f"{seed}:flan:{family}")`; the
FIRST n_eval of the pool evaluate and the rest is the family's training pool, so every variant of a
mixture (other clusters, budget, mixing) is evaluated on the same prompts and never trains on them.
(`pool_seed`, when set, is the seed of these family draws instead of `seed`: replicates with other
seeds then keep the eval set and training pools of pool_seed and vary only the mixing draws.)

Training (`build_train`): seen families of the trained clusters only (default: every cluster not in
HELDOUT_CLUSTERS; `clusters:` a subset of them), never a held-out family or cluster.
- size of a family = distinct training examples found in SIZE_DRAWS x (n_eval + cap) draws minus the
  n_eval ones, capped at `cap`. Mixing rate p_f ∝ size_f (mixing: proportional, FLAN's
  examples-proportional with a cap) or ∝ size_f^(1/temperature) (mixing: temperature; T=1 equals
  proportional, larger T flattens towards uniform).
- graded examples come in a stream whose family counts stay within 2 of p_f x n at every prefix n
  (`quota_stream`), so the shares are those asked whatever the budget cuts. Within a family the pool
  is taken in a seeded shuffled order; when the stream wants more than the pool holds, the pool is
  reshuffled and repeated, and the repeats are counted in the report.
- each graded example is zero-shot, few-shot or packed, in the shares (1 - few_shot_fraction -
  pack_fraction, few_shot_fraction, pack_fraction), again by quota_stream:
  few-shot: k (1..max_shots) other solved examples of the same family (the graded example's template
  when the pool has k of it, else any) as earlier user/assistant turns. Those earlier answers are
  correct answers of the family, so they are trained like any assistant turn (sftlab's default
  train_on: all_assistant): the shots add supervision in the family's own share (the few-shot
  decision does not depend on the family), and a model learns the graded answer in context.
  packed: 2..max_pack graded examples of different families as consecutive turns of one
  conversation, so the chat template's default system prompt (SmolLM2: ~20 tokens) is paid once.
- a conversation has a short explicit system message (one of SYSTEM_PROMPTS) in the share
  system_fraction, else none (the chat template then inserts its default one, if it has one).
- budget: `budget` graded examples (budget_unit: examples, no tokenizer needed), or rendered tokens
  (tokens: what packing fills rows with, i.e. the steps a run takes) or trained tokens (trained_tokens:
  what the loss averages over) under the tokenizer passed, so variants that train different clusters
  can train on the same number of tokens. Conversations are taken in stream order while the total stays
  <= budget; the first that would pass it ends the set (the report says how much budget is left).
  Tokens are counted as rendered, before a run's length policy (data.max_len). Training conversations
  are then shuffled (seeded).

meta of a training conversation: suite "flan", layout (zero_shot | few_shot | packed), shots (k),
system (index into SYSTEM_PROMPTS or None), examples [{family, cluster, template, answer}] (graded, in
order) and shot_families, plus family / answer of the LAST graded example (what a grader of the last
response reads).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from random import Random
from typing import Any, Literal

from pydantic import Field, model_validator

from sftlab.builtin import flan
from sftlab.configbase import Strict
from sftlab.conversation import Conversation, Message
from sftlab.errors import TemplateError

SUITE = "flan"
# A family's size is measured in SIZE_DRAWS x (n_eval + cap) draws: a family that can yield more than
# n_eval + cap distinct examples reaches the cap long before; a smaller one is seen almost whole.
SIZE_DRAWS = 4
# Short explicit system messages, written independently of one another and of the templates.
SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "Answer the user's request directly and briefly.",
    "You are a precise assistant. Give exactly the answer that is asked for, nothing more.",
    "Follow the instructions carefully.",
    "You are an assistant that solves small text and number tasks.",
    "Be concise.",
)
RENDER_CHUNK = 256  # conversations rendered at a time while counting tokens

Example = tuple[list[tuple[str, str]], str, int]  # (messages up to the answer, answer, template index)


class FlanMixture(Strict):
    """Knobs of the FLAN-style mixture (sftlab.builtin.flan.mixture). Unknown keys are errors."""

    seed: int = Field(0, description="every draw (examples, mixing, layouts) is deterministic per seed")
    pool_seed: int | None = Field(
        None, description="seed of the family draws alone (which examples evaluate, which form the training pools); "
                          "None = seed. Replicates evaluated on one eval set (builtin:flan-eval is seed 0) keep it at "
                          "that set's seed and vary seed, so no replicate trains on an eval example")
    n_eval: int = Field(40, ge=1, description="zero-shot evaluation examples per family (disjoint from training)")
    clusters: list[str] | None = Field(None, description="trained clusters; None = every cluster not held out")
    mixing: Literal["proportional", "temperature"] = Field(
        "proportional", description="proportional: p_f ∝ min(size_f, cap); temperature: p_f ∝ min(size_f, cap)^(1/T)")
    temperature: float = Field(2.0, gt=0, description="T of temperature mixing (only with mixing: temperature)")
    cap: int = Field(1000, ge=1, description="a family's size counts at most this many distinct training examples")
    budget: int = Field(8000, ge=1, description="how much training data, in budget_unit")
    budget_unit: Literal["examples", "tokens", "trained_tokens"] = Field(
        "examples", description="examples: graded examples; tokens / trained_tokens: rendered / trained tokens under "
                                "the tokenizer passed to build (needed for these two)")
    few_shot_fraction: float = Field(0.2, ge=0, le=1, description="share of graded examples given with k solved examples first")
    max_shots: int = Field(3, ge=1, description="k of a few-shot example is drawn from 1..max_shots")
    pack_fraction: float = Field(0.3, ge=0, le=1, description="share of graded examples packed with others into one conversation")
    max_pack: int = Field(3, ge=2, description="a packed conversation holds 2..max_pack examples of different families")
    system_fraction: float = Field(0.3, ge=0, le=1, description="share of training conversations with an explicit system message")

    @model_validator(mode="after")
    def _consistent(self) -> FlanMixture:
        problems = []
        if self.few_shot_fraction + self.pack_fraction > 1:
            problems.append(f"few_shot_fraction {self.few_shot_fraction} + pack_fraction {self.pack_fraction} > 1: "
                            "each graded example is one of zero-shot, few-shot or packed; lower one of them")
        if self.mixing == "proportional" and "temperature" in self.model_fields_set:
            problems.append(f"temperature {self.temperature} is only used by mixing: temperature; set mixing: temperature "
                            "or drop temperature (proportional mixing is temperature 1)")
        if self.clusters is not None:
            if not self.clusters:
                problems.append("clusters: [] trains nothing; name at least one cluster, or leave clusters unset for all")
            dup = sorted(c for c, n in Counter(self.clusters).items() if n > 1)
            if dup:
                problems.append(f"clusters lists {dup} more than once")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------- splits and sizes

def trained_clusters(cfg: FlanMixture) -> tuple[str, ...]:
    """The clusters a mixture trains, checked against the registry (held-out clusters are refused)."""
    trainable = [c for c in flan.CLUSTERS if c not in flan.HELDOUT_CLUSTERS]
    if cfg.clusters is None:
        return tuple(trainable)
    problems = [f"unknown {[c for c in cfg.clusters if c not in flan.CLUSTERS]}"] if set(cfg.clusters) - set(flan.CLUSTERS) else []
    held = [c for c in cfg.clusters if c in flan.HELDOUT_CLUSTERS]
    if held:
        problems.append(f"{held} held out (HELDOUT_CLUSTERS are never trained)")
    if problems:
        raise ValueError(f"clusters: {'; '.join(problems)}; fix: choose from {trainable}")
    return tuple(cfg.clusters)


def trained_families(cfg: FlanMixture) -> list[str]:
    """Seen families of the trained clusters, in registry order."""
    clusters = set(trained_clusters(cfg))
    return [n for n, f in flan.FAMILIES.items() if f.cluster in clusters and flan.split_of(n) == "seen"]


def eval_split(name: str, trained: tuple[str, ...] | list[str] | None = None) -> str:
    """A family's split for a model that trained clusters `trained` (None: every cluster not held out):
    "seen", "heldout" (the held-out family of a trained cluster), "heldout_cluster" (a cluster in
    HELDOUT_CLUSTERS) or "untrained_cluster" (a trainable cluster this model did not train)."""
    split = flan.split_of(name)
    if split == "heldout_cluster" or trained is None:
        return split
    return split if flan.FAMILIES[name].cluster in trained else "untrained_cluster"


def family_pool(name: str, cfg: FlanMixture) -> tuple[list[Example], list[Example]]:
    """(eval examples, training pool) of a family: one draw, the first n_eval evaluate."""
    seed = cfg.seed if cfg.pool_seed is None else cfg.pool_seed
    pool = flan.distinct_examples(name, cfg.n_eval + cfg.cap, seed, max_draws=SIZE_DRAWS * (cfg.n_eval + cfg.cap))
    if len(pool) < cfg.n_eval:
        raise ValueError(f"flan family {name!r}: only {len(pool)} distinct examples, n_eval={cfg.n_eval} needs more; "
                         f"fix: lower n_eval to at most {len(pool)} or widen the family's generator")
    return pool[: cfg.n_eval], pool[cfg.n_eval:]


def mixing_weights(sizes: Mapping[str, int], mixing: str = "proportional", temperature: float = 1.0) -> dict[str, float]:
    """p_f per family from (already capped) sizes: ∝ size (proportional) or ∝ size^(1/T) (temperature)."""
    power = 1.0 if mixing == "proportional" else 1.0 / temperature
    raw = {f: float(s) ** power for f, s in sizes.items()}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"no training examples in families {sorted(sizes)}")
    return {f: w / total for f, w in raw.items()}


def quota_stream(weights: Mapping[Any, float], rng: Random) -> Iterator[Any]:
    """An endless stream of keys in which key k's count after n items stays within 2 of p_k x n
    (p = weights normalised), in a random order: each key earns p_k credit per item; a key with a
    credit of 1 is due and taken; otherwise one is drawn with probability ∝ its positive credit."""
    keys = [k for k, w in weights.items() if w > 0]
    total = sum(weights[k] for k in keys)
    p = [weights[k] / total for k in keys]
    credit = [0.0] * len(keys)
    idx = range(len(keys))
    while True:
        for i in idx:
            credit[i] += p[i]
        best = max(idx, key=credit.__getitem__)
        i = best if credit[best] >= 1.0 - 1e-9 else rng.choices(idx, weights=[max(c, 0.0) for c in credit])[0]
        credit[i] -= 1.0
        yield keys[i]


# ---------------------------------------------------------------- conversations

def _turns(example: Example) -> list[Message]:
    messages, answer, _ = example
    return [Message(role, text) for role, text in messages] + [Message("assistant", answer)]


def _record(name: str, example: Example) -> dict:
    return {"family": name, "cluster": flan.FAMILIES[name].cluster, "template": example[2], "answer": example[1]}


def build_eval(cfg: FlanMixture | None = None) -> list[Conversation]:
    """n_eval zero-shot examples of every family (seen, held-out, held-out clusters), family by family."""
    cfg = cfg or FlanMixture()
    out = []
    for name in flan.FAMILIES:
        for i, ex in enumerate(family_pool(name, cfg)[0]):
            out.append(Conversation(tuple(_turns(ex)), source=f"builtin:flan-eval:{name}[{i}]",
                                    meta={"suite": SUITE, **_record(name, ex), "split": flan.split_of(name)}))
    return out


@dataclass
class MixReport:
    """What build_train made, counted."""

    clusters: tuple[str, ...]
    sizes: dict[str, int]  # capped training-pool size per trained family
    weights: dict[str, float]  # p_f
    budget: int
    budget_unit: str
    used: int = 0  # of the budget
    conversations: int = 0
    graded: Counter = field(default_factory=Counter)  # family -> graded examples
    shots: Counter = field(default_factory=Counter)  # family -> few-shot context examples
    repeated: int = 0  # graded examples drawn again after their family's pool was used up (reshuffled)
    layouts: Counter = field(default_factory=Counter)  # layout -> graded examples
    with_system: int = 0  # conversations with an explicit system message
    tokens: Any = None  # sftlab.render.TokenShare of the set, when a tokenizer was given

    def summary(self) -> str:
        n = sum(self.graded.values())
        lines = [f"flan mixture: {self.conversations} conversations, {n} graded examples of {len(self.sizes)} families "
                 f"in clusters {list(self.clusters)}; budget {self.used} of {self.budget} {self.budget_unit}",
                 "layouts (graded examples): " + ", ".join(f"{k} {v}" for k, v in sorted(self.layouts.items())),
                 f"few-shot context examples: {sum(self.shots.values())}; explicit system message: {self.with_system} "
                 f"conversations ({self.with_system / max(1, self.conversations):.1%})"]
        if self.tokens is not None:
            lines.append(f"tokens: {self.tokens.summary()}")
        if self.repeated:
            lines.append(f"repeated: {self.repeated} graded examples repeat an earlier one (their family's pool of "
                         f"distinct examples was used up and reshuffled)")
        return "\n".join(lines)


class _Family:
    """A family's training pool taken in a seeded shuffled order, reshuffled when used up."""

    def __init__(self, name: str, pool: list[Example], seed: int):
        self.name, self.pool = name, pool
        self.rng = Random(f"{seed}:flan-mix:order:{name}")
        self.order: list[int] = []
        self.passes = 0
        self.by_template: dict[int, list[int]] = {}
        for j, ex in enumerate(pool):
            self.by_template.setdefault(ex[2], []).append(j)

    def next(self) -> tuple[int, bool]:
        """(pool index, whether it repeats an earlier one)."""
        if not self.order:
            self.order = list(range(len(self.pool)))
            self.rng.shuffle(self.order)
            self.passes += 1
        return self.order.pop(), self.passes > 1

    def shots(self, j: int, k: int, rng: Random) -> list[int]:
        same = [i for i in self.by_template[self.pool[j][2]] if i != j]
        candidates = same if len(same) >= k else [i for i in range(len(self.pool)) if i != j]
        return rng.sample(candidates, k)


def _stream(cfg: FlanMixture, families: dict[str, _Family], weights: dict[str, float]
            ) -> Iterator[tuple[Conversation, int, int]]:
    """Endless (conversation, graded examples in it, how many of those repeat an earlier one), in stream
    order. Each decision has its own seeded stream, so e.g. the family sequence does not change with the
    few-shot fraction."""
    fam_stream = quota_stream(weights, Random(f"{cfg.seed}:flan-mix:families"))
    zero = max(0.0, 1.0 - cfg.few_shot_fraction - cfg.pack_fraction)
    layout_stream = quota_stream({"zero_shot": zero, "few_shot": cfg.few_shot_fraction, "packed": cfg.pack_fraction},
                                 Random(f"{cfg.seed}:flan-mix:layouts"))
    sys_stream = quota_stream({True: cfg.system_fraction, False: 1.0 - cfg.system_fraction},
                              Random(f"{cfg.seed}:flan-mix:system"))
    rng = Random(f"{cfg.seed}:flan-mix:draws")
    made = itertools.count()

    def conversation(graded: list[tuple[str, int, bool]], layout: str, shots: list[int]) -> tuple[Conversation, int, int]:
        messages: list[Message] = []
        system = rng.randrange(len(SYSTEM_PROMPTS)) if next(sys_stream) else None
        if system is not None:
            messages.append(Message("system", SYSTEM_PROMPTS[system]))
        name0 = graded[0][0]
        for j in shots:
            messages += _turns(families[name0].pool[j])
        records = []
        for name, j, repeat in graded:
            ex = families[name].pool[j]
            messages += _turns(ex)
            records.append(_record(name, ex))
        meta = {"suite": SUITE, "layout": layout, "shots": len(shots), "system": system, "examples": records,
                "shot_families": [name0] * len(shots), "family": records[-1]["family"], "answer": records[-1]["answer"]}
        conv = Conversation(tuple(messages), source=f"builtin:flan-train[{next(made)}]", meta=meta)
        return conv, len(graded), sum(r for _, _, r in graded)

    # open packed conversations, each with its target size; an example joins the first without its family
    buffers: list[tuple[list[tuple[str, int, bool]], int]] = []
    while True:
        name, layout = next(fam_stream), next(layout_stream)
        j, repeat = families[name].next()
        if layout == "packed":
            k = next((k for k, (b, _) in enumerate(buffers) if all(x[0] != name for x in b)), None)
            if k is None:
                buffers.append(([], rng.randint(2, cfg.max_pack)))
                k = len(buffers) - 1
            buffers[k][0].append((name, j, repeat))
            if len(buffers[k][0]) >= buffers[k][1]:
                yield conversation(buffers.pop(k)[0], "packed", [])
        elif layout == "few_shot":
            k = rng.randint(1, cfg.max_shots)
            yield conversation([(name, j, repeat)], "few_shot", families[name].shots(j, k, rng))
        else:
            yield conversation([(name, j, repeat)], "zero_shot", [])


def build_train(cfg: FlanMixture | None = None, tokenizer=None, renderer=None) -> tuple[list[Conversation], MixReport]:
    """The training conversations of the mixture and what was made (see the module doc).
    tokenizer / renderer (sftlab.render.Renderer): needed for budget_unit tokens / trained_tokens; when
    given, the report carries the set's trained share (TokenShare) under its chat template."""
    cfg = cfg or FlanMixture()
    clusters = trained_clusters(cfg)
    names = trained_families(cfg)
    if not names:
        raise ValueError(f"clusters {list(clusters)} have no seen family in the registry; fix: train other clusters")
    families = {n: _Family(n, family_pool(n, cfg)[1], cfg.seed) for n in names}
    small = {n: len(f.pool) for n, f in families.items() if len(f.pool) < cfg.max_shots + 1}
    if small:
        raise ValueError(f"flan families {small} have fewer than max_shots + 1 = {cfg.max_shots + 1} training examples "
                         f"after the {cfg.n_eval} eval ones; fix: lower n_eval or max_shots, or widen the families")
    sizes = {n: min(len(f.pool), cfg.cap) for n, f in families.items()}
    weights = mixing_weights(sizes, cfg.mixing, cfg.temperature)
    report = MixReport(clusters, sizes, weights, cfg.budget, cfg.budget_unit)
    if renderer is None and tokenizer is not None:
        from sftlab.render import Renderer

        renderer = Renderer(tokenizer)
    if cfg.budget_unit != "examples" and renderer is None:
        raise ValueError(f"budget_unit {cfg.budget_unit!r} counts tokens under a chat template; fix: pass tokenizer= "
                         "(the model's, with its chat template) or use budget_unit: examples")
    stream = _stream(cfg, families, weights)
    taken: list[Conversation] = []
    repeats = 0
    rendered: list = []
    done = False
    while not done:
        chunk = list(itertools.islice(stream, RENDER_CHUNK if renderer is not None else 1))
        costs = [n for _, n, _ in chunk]
        rows = None
        if renderer is not None:
            rows = renderer.render_batch([c for c, _, _ in chunk])
            bad = next((r for r in rows if isinstance(r, TemplateError)), None)
            if bad is not None:
                raise bad
            if cfg.budget_unit != "examples":
                costs = [len(r) if cfg.budget_unit == "tokens" else r.n_trained for r in rows]
        for k, ((conv, _, rep), cost) in enumerate(zip(chunk, costs)):
            if report.used + cost > cfg.budget:
                done = True
                break
            report.used += cost
            repeats += rep
            taken.append(conv)
            if rows is not None:
                rendered.append(rows[k])
            if report.used == cfg.budget:
                done = True
                break
    if not taken:
        raise ValueError(f"budget {cfg.budget} {cfg.budget_unit} is smaller than the first conversation; fix: raise budget")
    _count(report, taken, repeats)
    if renderer is not None:
        from sftlab.render import TokenShare

        report.tokens = TokenShare.of(rendered)
    Random(f"{cfg.seed}:flan-mix:shuffle").shuffle(taken)
    return taken, report


def _count(report: MixReport, convs: list[Conversation], repeats: int) -> None:
    for c in convs:
        for r in c.meta["examples"]:
            report.graded[r["family"]] += 1
            report.layouts[c.meta["layout"]] += 1
        report.shots[c.meta["family"]] += c.meta["shots"]
    report.conversations = len(convs)
    report.with_system = sum(c.meta["system"] is not None for c in convs)
    report.repeated = repeats


def build(cfg: FlanMixture | None = None, tokenizer=None) -> tuple[list[Conversation], list[Conversation], MixReport]:
    """(training conversations, evaluation conversations, report) of one mixture."""
    cfg = cfg or FlanMixture()
    train, report = build_train(cfg, tokenizer)
    return train, build_eval(cfg), report


def train_eval_split(seed: int = 0) -> tuple[list[Conversation], list[Conversation]]:
    """The default mixture's (train, eval) for `seed`: builtin:flan-train / builtin:flan-eval at seed 0."""
    train, evaluation, _ = build(FlanMixture(seed=seed))
    return train, evaluation


# ---------------------------------------------------------------- checking answers

def check_answer(conversation_or_meta: Conversation | Mapping[str, Any], response: str) -> bool:
    """Grade a response to a flan conversation (its meta's family and answer) with the family's checker."""
    meta = conversation_or_meta.meta if isinstance(conversation_or_meta, Conversation) else conversation_or_meta
    missing = [k for k in ("family", "answer") if k not in meta]
    if missing:
        raise ValueError(f"flan example meta lacks {missing}; fix: pass a conversation made by "
                         "sftlab.builtin.flan.mixture (its meta has 'family' and 'answer')")
    name = str(meta["family"])
    if name not in flan.FAMILIES:
        raise ValueError(f"unknown flan family {name!r}; fix: use one of {sorted(flan.FAMILIES)}")
    return flan.FAMILIES[name].check(response, str(meta["answer"]))
