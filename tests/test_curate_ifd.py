"""IFD difficulty score (curate block `ifd_score`): the packed scores equal a one-row-at-a-time
computation written here from the model's logits; filters drop with reasons; unscorable rows are
counted, never scored; on the real SmolLM2 an answer to another question scores a higher IFD."""

import math

import pytest
import torch
import torch.nn.functional as F

from sftlab.conversation import Conversation
from sftlab.curate import IFDScore
from sftlab.curate.config import CurateConfig
from sftlab.render import Renderer

ROWS = [
    [("user", "Reverse the word apple."), ("assistant", "elppa")],
    [("user", "What is 2 + 3?"), ("assistant", "The answer is 5.")],
    [("system", "Be brief."), ("user", "Hello there!"), ("assistant", "Hello! How are you today?")],
    [("user", "Sort these numbers: 3, 1, 2"), ("assistant", "1, 2, 3"), ("user", "And reversed?"),
     ("assistant", "3, 2, 1 -> the quick brown fox")],
    [("user", "Say something about a dog."), ("assistant", "The quick brown fox jumps over the lazy dog. " * 3)],
]


def convs(rows=ROWS):
    return [Conversation.from_messages([{"role": r, "content": c} for r, c in row], id=f"r{i}") for i, row in enumerate(rows)]


def mean_ce_of_tail(model, ids: list[int], n_tail: int) -> float:
    """Mean CE of the last n_tail tokens of `ids`, one unpacked forward, full logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    targets = torch.tensor(ids[1:])
    ce = F.cross_entropy(logits[:-1], targets, reduction="none")
    return float(ce[-n_tail:].mean())


def reference_ifd(model, tok, conv: Conversation) -> tuple[float, float]:
    """(answer_loss, answer_loss_alone) from the tokenizer's own chat template, not sftlab's renderer:
    the answer is the text between the prompt-with-generation-header and the full conversation,
    up to and including <|im_end|> (what training trains)."""
    msgs = conv.to_dicts()
    prompt = tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert full[: len(prompt)] == prompt
    end = tok.convert_tokens_to_ids("<|im_end|>")
    answer = full[len(prompt):]
    answer = answer[: answer.index(end) + 1]
    empty = tok.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=True, return_dict=False)
    # the first answer token is predicted from the prompt's last position, so all len(answer) count
    return mean_ce_of_tail(model, prompt + answer, len(answer)), mean_ce_of_tail(model, empty + answer, len(answer))


@pytest.mark.parametrize("batch_tokens", [64, 4096])  # 64: about one row per forward; 4096: all rows in one pack
def test_packed_ifd_equals_one_by_one_reference(tiny_model, tokenizer, batch_tokens):
    block = IFDScore(IFDScore.Config(batch_tokens=batch_tokens, chunk_rows=2), model=tiny_model, tokenizer=tokenizer)
    out = list(block(convs()))
    assert [c.id for c in out] == [f"r{i}" for i in range(len(ROWS))]
    for c in out:
        loss, alone = reference_ifd(tiny_model, tokenizer, c)
        assert c.meta["answer_loss"] == pytest.approx(loss, abs=2e-4)
        assert c.meta["answer_loss_alone"] == pytest.approx(alone, abs=2e-4)
        assert c.meta["ifd"] == pytest.approx(loss / alone, abs=2e-4)
    assert block.stats.seen == len(ROWS) and block.stats.dropped == 0
    assert set(block.stats.notes["ifd_quantiles"]) == {"p05", "p25", "p50", "p75", "p95"}


def test_filters_drop_with_reasons_and_unscorable_rows_are_counted(tiny_model, tokenizer):
    scores = sorted(c.meta["ifd"] for c in IFDScore(model=tiny_model, tokenizer=tokenizer)(convs()))
    assert len(set(scores)) == len(scores)
    lo, hi = (scores[0] + scores[1]) / 2, (scores[-2] + scores[-1]) / 2  # drop the lowest and the highest
    no_answer = Conversation.from_messages([{"role": "user", "content": "Hello there!"}], id="q-only")
    block = IFDScore(IFDScore.Config(min_ifd=lo, max_ifd=hi), model=tiny_model, tokenizer=tokenizer)
    kept = list(block(convs() + [no_answer]))
    assert all(lo <= c.meta["ifd"] < hi for c in kept)
    assert len(kept) == len(ROWS) - 2
    assert block.stats.dropped_by_reason == {"ifd_below_min": 1, "ifd_above_max": 1, "unscorable": 1}
    details = {s["reason"]: s["detail"] for s in block.stats.samples}
    assert "no assistant answer" in details["unscorable"]
    assert "does not help" in details["ifd_above_max"]


def test_long_prompts_are_cut_from_the_left_and_counted(tiny_model, tokenizer):
    long = [[("user", "Reverse the word apple. " * 40), ("assistant", "elppa")]]
    block = IFDScore(IFDScore.Config(max_len=32), model=tiny_model, tokenizer=tokenizer)
    (c,) = list(block(convs(long)))
    assert block.stats.notes["prompt_cut_from_left"] == 1
    assert math.isfinite(c.meta["ifd"])


def test_pipeline_yaml_accepts_ifd_block_and_rejects_unknown_keys():
    cfg = CurateConfig.model_validate({"inputs": [{"path": "x.jsonl"}], "output": "y.jsonl",
                                       "blocks": [{"type": "ifd_score", "max_ifd": 1.0}]})
    assert cfg.blocks[0].max_ifd == 1.0
    with pytest.raises(Exception, match="max_ifdd"):
        CurateConfig.model_validate({"inputs": [{"path": "x.jsonl"}], "output": "y.jsonl", "blocks": [{"type": "ifd_score", "max_ifdd": 1.0}]})
    with pytest.raises(Exception, match="below max_ifd"):
        CurateConfig.model_validate({"inputs": [{"path": "x.jsonl"}], "output": "y.jsonl",
                                     "blocks": [{"type": "ifd_score", "min_ifd": 1.0, "max_ifd": 0.5}]})


@pytest.mark.slow
def test_smollm2_scores_answers_to_other_questions_higher():
    """Each built-in row's answer, and the same answer attached to the NEXT row's question: the
    instruction no longer helps, so IFD rises (Superfiltering's misalignment signal)."""
    from sftlab.builtin.tasks import build_suite

    rows = build_suite(1)[:16]  # one row of each of 16 families: the swapped answer is another task's
    swapped = [Conversation.from_messages([m.to_dict() for m in rows[i].prompt_messages]
                                          + [{"role": "assistant", "content": rows[(i + 1) % 16].last_response}], id=f"s{i}")
               for i in range(16)]
    block = IFDScore()
    right = [c.meta["ifd"] for c in block(rows)]
    wrong = [c.meta["ifd"] for c in block(swapped)]
    assert sum(w > r for w, r in zip(wrong, right)) >= 13, (right, wrong)
    assert sum(wrong) / 16 > sum(right) / 16 + 0.1
