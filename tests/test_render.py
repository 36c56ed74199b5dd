"""The masks: trained tokens are exactly the assistant contents plus their stop tokens."""

import pytest

from sftlab.conversation import Conversation
from sftlab.errors import TemplateError
from sftlab.render import Renderer, format_mask, preflight
from sftlab.templates import ALPACA, LLAMA3, apply_template
from tiny import make_tokenizer

MULTI = Conversation.from_messages(
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Reverse apple."},
        {"role": "assistant", "content": "elppa"},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "5"},
    ]
)


def trained_pieces(r, tok):
    """Decode each maximal run of trained tokens."""
    pieces, run = [], []
    for tid, m in zip(r.input_ids, r.loss_mask):
        if m:
            run.append(tid)
        elif run:
            pieces.append(tok.decode(run))
            run = []
    if run:
        pieces.append(tok.decode(run))
    return pieces


def test_trained_tokens_are_exactly_assistant_turns_plus_stop(tokenizer):
    r = Renderer(tokenizer).render(MULTI)
    assert trained_pieces(r, tokenizer) == ["elppa<|im_end|>", "5<|im_end|>"]
    # independent computation: the exact token ids of each answer + stop, tokenized alone
    expected = [tokenizer("elppa<|im_end|>", add_special_tokens=False)["input_ids"],
                tokenizer("5<|im_end|>", add_special_tokens=False)["input_ids"]]
    got = [tid for tid, m in zip(r.input_ids, r.loss_mask) if m]
    assert got == expected[0] + expected[1]
    # the full token sequence decodes to the template's rendering
    assert tokenizer.decode(r.input_ids) == tokenizer.apply_chat_template(MULTI.to_dicts(), tokenize=False)
    assert r.turn_ends and r.input_ids[r.turn_ends[0] - 1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_last_assistant_only_and_everything(tokenizer):
    r = Renderer(tokenizer, train_on="last_assistant").render(MULTI)
    assert trained_pieces(r, tokenizer) == ["5<|im_end|>"]
    r = Renderer(tokenizer, train_on="everything").render(MULTI)
    assert sum(r.loss_mask) == len(r.input_ids) - 1 and r.loss_mask[0] == 0


@pytest.mark.parametrize("template,stop", [(LLAMA3, "<|eot_id|>"), (ALPACA, "<|im_end|>")])
def test_other_templates(template, stop):
    tok = make_tokenizer(template=None)
    name = "llama3" if template is LLAMA3 else "alpaca"
    added = apply_template(tok, name, add_missing_tokens=True)
    assert (stop in added) == (name == "llama3")
    r = Renderer(tok).render(MULTI)
    assert trained_pieces(r, tok) == [f"elppa{stop}", f"5{stop}"]


def test_template_that_drops_old_turns_is_refused():
    # keeps only the last assistant turn's content: earlier turns change once a turn is added
    bad = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\n<|im_end|>\n' }}{% else %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tok = make_tokenizer(template=bad)
    with pytest.raises(TemplateError, match="differently once later turns are added"):
        Renderer(tok).render(MULTI)


def test_template_without_stop_token_is_refused():
    tok = make_tokenizer(template="{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                                  "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    with pytest.raises(TemplateError, match="never learns to stop"):
        Renderer(tok)


def test_template_that_raises_is_reported():
    tok = make_tokenizer(template="{{ raise_exception('no system role') }}")
    with pytest.raises(TemplateError, match="no system role"):
        Renderer(tok)


def test_preflight_reports_double_bos_and_untrained():
    tok = make_tokenizer(template="{{ bos_token }}{{ bos_token }}" + make_tokenizer().chat_template)
    rep = preflight(Renderer(tok), [MULTI])
    assert rep.double_bos and not rep.ok
    assert "double BOS" in rep.format()
    ok = preflight(Renderer(make_tokenizer()), [MULTI])
    assert ok.ok, ok.format()


def test_text_rows_train_every_token(tokenizer):
    conv = Conversation.document("The quick brown fox.")
    r = Renderer(tokenizer).render(conv)
    assert r.input_ids[-1] == tokenizer.eos_token_id
    assert r.loss_mask == [0] + [1] * (len(r) - 1)


def test_prompt_rendering_matches_training_prefix(tokenizer):
    rd = Renderer(tokenizer)
    r = rd.render(MULTI)
    prompt = rd.render_prompt(MULTI.to_dicts()[:4])
    first_trained_of_turn2 = [i for i in range(1, len(r)) if r.loss_mask[i] and not r.loss_mask[i - 1]][1]
    assert r.input_ids[:first_trained_of_turn2] == prompt


def test_format_mask_marks_trained(tokenizer):
    rd = Renderer(tokenizer)
    shown = format_mask(rd, rd.render(MULTI), color=False)
    assert "[[elppa<|im_end|>]]" in shown and "[[5<|im_end|>]]" in shown
