"""speed/shared_prefix.py: a frozen language model reads the prefix every example shares once, as a KV cache.

The reference is the plain loss over the full packed rows (loss.summed_loss, transformers' attention
with the prefix recomputed in every row); a second reference runs the shortened rows through plain
sdpa with only the 4D mask, not sftlab's per-example attention."""

import json

import pytest
import torch

from sftlab.config import load_config
from sftlab.loss import summed_loss
from sftlab.render import Rendered
from sftlab.speed import shared_prefix as sp
from sftlab.speed.packed_attention import packed_attention
from sftlab.train import setup_data, setup_model, train
from test_multimodal_train import mm_run, rows  # noqa: F401 - mm_run is a fixture

SYSTEM = "You are a careful assistant who looks at images."


@pytest.fixture
def stage1(mm_run, tmp_path):  # noqa: F811 - the fixture imported above
    """test_multimodal_train's tiny LLaVA stage 1 (projector only), its rows all starting with the same system message."""
    cfg, paths = mm_run
    rs = rows(paths)
    for r in rs:
        r["messages"].insert(0, {"role": "system", "content": SYSTEM})
    data = tmp_path / "mm-system.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rs))
    return {**cfg, "data": {**cfg["data"], "train": [{"path": str(data)}]}, "train": {**cfg["train"], "tokens_per_batch": 256}}


def _model_and_data(cfg):
    rc = load_config(cfg)
    tokenizer, processor, added, data = setup_data(rc, None)
    torch.manual_seed(0)
    model = setup_model(rc, None, tokenizer, added, processor)
    for p in model.parameters():  # a projector far from ~0, so image features matter to every later token
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    model.processor = processor  # for the evaluation test
    return rc, tokenizer, model, data


def _loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss, n = loss_fn(model, batch)
    loss.backward()
    return loss.item(), n, [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_common_prefix_stops_before_images_trained_labels_and_the_first_difference():
    def r(ids, mask, spans=()):
        return Rendered(ids, mask, image_spans=list(spans))

    same = [r([1, 2, 3, 4, 5, 6, 7, 8], [0] * 6 + [1, 1]), r([1, 2, 3, 4, 5, 9, 9, 9], [0] * 7 + [1])]
    assert sp.common_prefix(same) == 5  # the rows differ at token 5
    # token 4 is trained: its label sits at position 3, which must stay, so 3 tokens can go
    assert sp.common_prefix([r([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 1]), r([1, 2, 3, 4, 5, 6], [0] * 5 + [1])]) == 3
    # an image token at 2: its embedding comes from the trained projector
    assert sp.common_prefix([r([1, 2, 7, 7, 5, 6], [0] * 5 + [1], [(2, 4)]), r([1, 2, 7, 7, 5, 6], [0] * 5 + [1], [(2, 4)])]) == 2
    assert sp.common_prefix([r([1, 2, 3], [0, 0, 1]), r([9, 2, 3], [0, 0, 1])]) == 0


def test_shortened_rows_give_the_plain_loss_and_gradients(stage1):
    rc, tokenizer, model, data = _model_and_data(stage1)
    P = sp.common_prefix(data.train.examples)
    assert tokenizer.decode(data.train.examples[0].input_ids[:P]).count(SYSTEM) == 1  # the system turn is in it
    shared = sp.SharedPrefixLoss(summed_loss, data.train.examples[0].input_ids[:P])
    with packed_attention(model, True):
        assert sp.why_not(model, rc) is None
        for b in range(len(data.train)):
            batch = data.train.batch(b)
            ref_loss, ref_n, ref_grads = _loss_and_grads(model, summed_loss, batch)
            loss, n, grads = _loss_and_grads(model, shared, batch)
            assert n == ref_n > 0
            assert loss == pytest.approx(ref_loss, rel=1e-5)
            for g, ref in zip(grads, ref_grads):
                torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    assert shared.rows_shortened == len(data.train) > 1 and shared.rows_plain == 0
    # the shortened rows: each example lost exactly its P prefix tokens
    batch = data.train.batch(0)
    short = sp.strip_prefix(batch, torch.tensor(data.train.examples[0].input_ids[:P]))
    assert short.input_ids.shape[1] == batch.input_ids.shape[1] - P * batch.n_examples
    assert int((short.position_ids == P).sum()) == batch.n_examples


def test_the_4d_mask_alone_gives_the_same_loss_through_plain_sdpa(stage1):
    """The second path: transformers' own sdpa with sftlab's 4D mask and the cache, no per-example attention."""
    _, _, model, data = _model_and_data(stage1)
    prefix = data.train.examples[0].input_ids[:sp.common_prefix(data.train.examples)]
    shared = sp.SharedPrefixLoss(summed_loss, prefix)
    assert model.config._attn_implementation == "sdpa"
    batch = data.train.batch(1)
    with torch.no_grad():
        ref, _ = summed_loss(model, batch)
        got, _ = shared(model, batch)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_a_row_whose_examples_do_not_all_start_with_the_prefix_takes_the_plain_loss(stage1):
    _, _, model, data = _model_and_data(stage1)
    prefix = list(data.train.examples[0].input_ids[:sp.common_prefix(data.train.examples)])
    prefix[-2] += 1  # a prefix no example has
    shared = sp.SharedPrefixLoss(summed_loss, prefix)
    batch = data.train.batch(0)
    with torch.no_grad(), packed_attention(model, True):
        assert shared(model, batch)[0].item() == summed_loss(model, batch)[0].item()
    assert shared.rows_plain == 1 and shared.rows_shortened == 0


@pytest.mark.parametrize("change, reason", [
    ({"lora": {"enabled": True, "r": 4, "alpha": 8}, "multimodal": {"trainable": ["projector", "language_model"]}},
     "the language model trains"),
    ({"train": {"gradient_checkpointing": True}}, "gradient_checkpointing"),
    ({"train": {"neftune_alpha": 5.0}}, "neftune"),
    ({"data": {"packing": False}}, "packing"),
])
def test_runs_where_it_would_not_be_exact_do_not_use_it(stage1, change, reason):
    cfg = {k: ({**v, **change[k]} if isinstance(v, dict) and k in change else v) for k, v in stage1.items()}
    if "lora" in change:
        cfg["multimodal"] = {**stage1["multimodal"], **change["multimodal"]}
    rc, _, model, _ = _model_and_data(cfg)
    with packed_attention(model, True):
        assert reason in sp.why_not(model, rc)
    assert "per-example attention" in sp.why_not(_model_and_data(stage1)[2], load_config(stage1))  # sdpa without the context


def test_training_with_and_without_it_logs_the_same_losses(stage1, tmp_path, capsys):
    on = train(load_config(stage1))
    assert "shared prefix: the" in capsys.readouterr().out
    off_cfg = {**stage1, "train": {**stage1["train"], "output_dir": str(tmp_path / "off"), "speed": {"shared_prefix": False}}}
    off = train(load_config(off_cfg))
    assert "shared prefix" not in capsys.readouterr().out

    def losses(result):
        return [json.loads(line)["loss"] for line in (result.final_dir.parent / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line) and "step" in json.loads(line)]

    a, b = losses(on), losses(off)
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, rel=1e-4)


def test_evaluation_answer_losses_are_the_same_with_the_prefix_read_once(stage1):
    from sftlab.data.load import load_conversations
    from sftlab.multimodal.evaluate import answer_losses

    _, _, model, _ = _model_and_data(stage1)
    convs = load_conversations(stage1["data"]["train"][0]["path"]).conversations
    # rows of 200 tokens: several examples each, and a prefix (the system turn) in every one of them
    sums, counts = answer_losses(model, model.processor, convs, tokens_per_row=200)
    ref_sums, ref_counts = answer_losses(model, model.processor, convs, tokens_per_row=200, shared_prefix=False)
    assert counts == ref_counts and len(sums) == len(convs)
    assert sums == pytest.approx(ref_sums, rel=1e-5)
    assert len(set(round(x, 3) for x in sums)) > 1
