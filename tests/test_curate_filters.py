"""Each quality filter: a kept example, a rejected one, and the reason it is counted under."""

import pytest

from sftlab.conversation import Conversation
from sftlab.curate.filters import (
    EmptyResponseFilter,
    FormattingFilter,
    GarbageFilter,
    PromptEchoFilter,
    RefusalFilter,
    RepetitionFilter,
    ResponseLengthFilter,
    is_yes_no_question,
)


def conv(prompt: str, response: str) -> Conversation:
    return Conversation.from_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


GOOD = conv("Explain why the sky is blue in two sentences.",
            "Sunlight is scattered by the molecules in the air, and blue light is scattered the most because of its "
            "short wavelength. So when we look up we see blue light coming from every direction.")


def run(block, *convs):
    kept = list(block(convs))
    return kept, block.stats


# (block, rejected example, expected reason)
CASES = [
    (EmptyResponseFilter(), conv("Write a poem about rain.", "   "), "empty_response"),
    (EmptyResponseFilter(), conv("Write a poem about rain.", "OK."), "trivial_response"),
    (EmptyResponseFilter(), conv("Tell me about Paris.", "yes"), "trivial_response"),
    (PromptEchoFilter(), conv("Describe the water cycle in simple words for a child",
                              "Describe the water cycle in simple words for a child."), "prompt_echo"),
    (ResponseLengthFilter(min_words=5), conv("Name the capital of France and explain its history.", "Paris."),
     "response_too_short"),
    (ResponseLengthFilter(max_words=40), conv("Say more.", "word " * 41), "response_too_long"),
    (ResponseLengthFilter(min_ratio=0.5), conv("Give a one-line summary of this paragraph: " + "text " * 40, "Text."),
     "response_ratio_too_low"),
    (ResponseLengthFilter(max_ratio=5.0), conv("Hi", "Hello there, how can I help you today? " * 3),
     "response_ratio_too_high"),
    (RefusalFilter(), conv("Write a story.", "As an AI language model, I cannot write stories."), "refusal"),
    (RefusalFilter(), conv("Help me.", "I'm sorry, but I can't help with that request."), "refusal"),
    (RefusalFilter(), conv("Help me.", "I cannot help with that."), "refusal"),
    (RepetitionFilter(), conv("Write a paragraph about dogs.", "Dogs are great pets. " * 12), "repeated_ngrams"),
    (RepetitionFilter(min_words=1000), conv("List the steps.", "\n".join(["Step: open the lid carefully"] * 3
                                                                        + ["Then close it again slowly", "done now ok ok"])),
     "repeated_lines"),
    (FormattingFilter(), conv("Write Python code.", "Here it is:\n```python\nprint('hi')\n"), "unbalanced_code_fence"),
    (FormattingFilter(), conv("Give me JSON.", '{"name": "Ann", "age": 3'), "truncated_json"),
    (FormattingFilter(), conv("Give me JSON.", 'Sure:\n```json\n{"a": [1, 2\n```'), "truncated_json"),
    (GarbageFilter(), conv("Translate this.", "Caf\ufffd au lait is a drink with coffee and milk."), "replacement_chars"),
    (GarbageFilter(), conv("Say hi.", "Hi\x00 there, how are you doing today my friend?"), "control_chars"),
    (GarbageFilter(), conv("Say hi.", "%%%% #### @@@@ !!!! 1234 5678 ---- ==== ++++ ////"), "low_letter_fraction"),
]


@pytest.mark.parametrize("block,bad,reason", CASES, ids=[f"{c[0].name}-{c[2]}" for c in CASES])
def test_filter_rejects_with_reason_and_keeps_good(block, bad, reason):
    kept, stats = run(block, GOOD, bad)
    assert kept == [GOOD]
    assert stats.dropped_by_reason == {reason: 1}
    assert stats.seen == 2 and stats.kept == 1
    assert stats.samples[0]["reason"] == reason and stats.samples[0]["id"] == bad.id and stats.samples[0]["detail"]


def test_yes_is_fine_for_a_yes_no_question():
    ok = conv("Is 7 a prime number?", "Yes")
    kept, stats = run(EmptyResponseFilter(), ok, conv("Write a haiku about snow.", "Yes"))
    assert kept == [ok] and stats.dropped_by_reason == {"trivial_response": 1}
    assert is_yes_no_question("Here is a list: 2, 3, 5. Does it contain only primes?")
    assert not is_yes_no_question("What is 2+2?")


def test_good_formats_and_code_are_kept():
    code = conv("Write a loop in C.", "```c\nfor (int i = 0; i < 10; i++) {\n  x += i;\n}\n```")
    js = conv("Return JSON.", '{"name": "Ann", "tags": ["a", "b"]}')
    citation = conv("Cite it.", "[1] Smith, J. (2020). A paper. Journal of Things.")
    kept, stats = run(FormattingFilter(), code, js, citation)
    assert kept == [code, js, citation] and stats.dropped == 0
    # short maths answers are not judged on their letter fraction; code lines that repeat "}" are fine
    kept, _ = run(GarbageFilter(), conv("2+2?", "2 + 2 = 4"), code)
    assert len(kept) == 2
    kept, _ = run(RepetitionFilter(), code)
    assert kept == [code]


def test_refusal_only_looks_at_the_start():
    long_answer = conv("How do I secure my server?", "Use SSH keys and a firewall. " + "Keep packages updated. " * 20
                       + "I cannot help with physical security, though.")
    kept, _ = run(RefusalFilter(), long_answer)
    assert kept == [long_answer]


def test_every_assistant_turn_is_checked():
    multi = Conversation.from_messages([
        {"role": "user", "content": "Hi, can you write me a poem?"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Go on."}, {"role": "assistant", "content": "Roses are red, violets are blue."}])
    kept, stats = run(EmptyResponseFilter(), multi)
    assert kept == [] and stats.dropped_by_reason == {"trivial_response": 1}


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match="extra"):
        RefusalFilter(patern=["x"])
