"""Batched generation equals one-at-a-time generation, and stops at the end-of-turn token."""

import torch

from sftlab.generate import SamplingParams, decode_answer, generate_batch, stream_answer
from sftlab.render import Renderer
from tiny import make_model, make_tokenizer

PROMPTS = [
    [{"role": "user", "content": "Reverse the word apple."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3? Answer with the number."}],
]


def test_batched_equals_one_by_one_and_streaming():
    tok = make_tokenizer()
    model = make_model()
    rd = Renderer(tok)
    params = SamplingParams(max_new_tokens=12)
    batched = generate_batch(model, rd, PROMPTS, params, batch_size=3, progress=False)
    alone = [generate_batch(model, rd, [p], params, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == alone
    streamed = "".join(stream_answer(model, rd, PROMPTS[0], params)).strip()
    assert streamed == alone[0]


def test_generation_stops_at_end_of_turn():
    tok = make_tokenizer()
    model = make_model()
    rd = Renderer(tok)
    stop = rd.stop_token_id
    # make the model always predict the stop token: bias its lm_head row
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.config.vocab_size))
        model.lm_head.bias[stop] = 1e4
    out = generate_batch(model, rd, PROMPTS, SamplingParams(max_new_tokens=20), progress=False)
    assert out == ["", "", ""]
    assert decode_answer(tok, tok("abc<|im_end|>def", add_special_tokens=False)["input_ids"], [stop]) == "abc"
