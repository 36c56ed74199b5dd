"""Inputs: model folders and names, command-line overrides and data files that must end in a clean
error, never a traceback, a misleading message or a silent change.

Every CLI case runs `sftlab train` in-process (sftlab.cli.main) and must print one clean
`error: ...` block (exit code 2, no traceback) with what, where and how to fix it, in the user's
words (YAML keys, command-line flags). Their messages are rows of docs/errors.md (regenerate with
`python tests/error_cases.py`). Then: what loading counts and reports instead of changing
silently, the `rejects:` key the data errors recommend, and the length policy's split, which was
quadratic in the example's length (exact output kept, linear work)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sftlab.cli import main  # noqa: E402
from sftlab.data import load_conversations  # noqa: E402
from sftlab.data.config import DataSourceConfig  # noqa: E402
from sftlab.errors import ConfigError, DataError, ModelLoadError  # noqa: E402
from sftlab.pack import LengthReport, apply_length_policy  # noqa: E402
from sftlab.render import Rendered  # noqa: E402
from error_cases import CLI_CASES, QA, Case, assert_clean_error, edited_config, model_folder, run_case  # noqa: E402
from helpers import run_config, write_config  # noqa: E402
from tiny import make_tokenizer  # noqa: E402


def _run(case: Case, tmp: Path) -> tuple[int, str]:
    try:
        return run_case(case, tmp)
    except Exception as e:  # noqa: BLE001 - a traceback is what this test exists to catch
        pytest.fail(f"{case.name}: raised {type(e).__name__} instead of a clean error: {e}")


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_bad_input_is_a_clean_error(case, tmp_path):
    msg = assert_clean_error(case, *_run(case, tmp_path))
    # Python keyword arguments are not the user's words; --on-error & co. exist on no command
    for not_theirs in ("on_error=", "rejects_path", "columns=", "format=", "require_response", "max_line_bytes",
                       "README 'Config", "--on-error", "--rejects", "--columns", "--split"):
        assert not_theirs not in msg, f"{not_theirs!r} (not an option the user has) in:\n{msg}"


def test_the_offline_message_says_none_when_nothing_is_cached(tmp_path, monkeypatch):
    from sftlab.model import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-cache"))
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer("gpt-nonexistent")
    assert "not found locally" in str(info.value) and "cached hub models in" in str(info.value) and ": none" in str(info.value)


def test_a_tokenizer_only_folder_still_serves_data_inspect(tmp_path):
    """A folder with a tokenizer and no weights is enough where only a tokenizer is needed; a model
    load names what is missing."""
    from sftlab.model import load_model, load_tokenizer

    folder = model_folder(tmp_path, "tok", weights=False)
    text = "Reverse the word apple."
    assert load_tokenizer(str(folder))(text)["input_ids"] == make_tokenizer()(text)["input_ids"]
    with pytest.raises(ModelLoadError, match=r"has no config.json .* and no weights"):
        load_model(str(folder))


# ---- overrides that work -----------------------------------------------------------------------


def test_overrides_reach_list_entries_and_mappings(tmp_path):
    from sftlab.config import load_config

    cfg = write_config(tmp_path, run_config(tmp_path))
    c = load_config(cfg, ["data.train.0.limit=3", "data.train.0.columns.instruction=q", "data.eval.0.path=e.jsonl",
                          "lora.target_modules=[q_proj, v_proj]", "train.lr=1e-4"])
    assert c.data.train[0].limit == 3 and c.data.train[0].columns == {"instruction": "q"}
    assert c.data.eval[0].path == "e.jsonl" and c.lora.target_modules == ["q_proj", "v_proj"] and c.train.lr == 1e-4
    with pytest.raises(ConfigError, match=r"data.train has 1 entry, so index 5 is out of range"):
        load_config(cfg, ["data.train.5.path=x"])
    with pytest.raises(ConfigError, match=r"train.lr: got 'fast' \(from the command line: train.lr=fast\)"):
        load_config(cfg, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"did you mean train.warmup_ratio\?"):
        load_config(cfg, ["train.warmup_ration=0.1"])
    with pytest.raises(ConfigError, match=r"'data.train' is a list, so the part after it must be an index"):
        load_config(cfg, ["data.train.path=x.jsonl"])


# ---- silent changes: counted and reported ------------------------------------------------------


def test_empty_csv_rows_are_counted_and_reported(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction,output\nI,O\n,,\n\nI2,O2\n , \n")
    res = load_conversations(path)
    assert len(res.conversations) == 2 and res.stats.empty_rows == 2
    assert f"skipped 2 empty CSV row(s) (every cell empty): {path}:row 3, {path}:row 6" in res.stats.summary()
    only_empty = tmp_path / "e.csv"
    only_empty.write_text("instruction,output\n,\n")
    with pytest.raises(DataError, match="has a header"):
        load_conversations(only_empty)


def _folder(tmp_path) -> Path:
    folder = tmp_path / "my-data"  # not "data": run_config's own train.jsonl lives there
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.jsonl").write_text(json.dumps({"messages": QA}) + "\n")
    (folder / "b.csv").write_text("instruction,output\nReverse lazy.,yzal\n")
    (folder / "README.txt").write_text("How this data was made.")
    (folder / "notes.md").write_text("notes")
    return folder


def test_a_folder_skips_text_files_beside_data_and_says_what_it_took(tmp_path):
    folder = _folder(tmp_path)
    res = load_conversations(folder)
    assert sorted(c.meta["format"] for c in res.conversations) == ["alpaca", "messages"]  # README.txt not trained on
    assert res.stats.ignored_files == [str(folder / "README.txt"), str(folder / "notes.md")]
    assert (f"folder {folder}: took 2 file(s) (.csv 1, .jsonl 1); skipped 1 text file(s) beside the structured data "
            f"({folder}/README.txt)") in res.stats.summary()
    assert f"skipped 1 file(s) of other types (.md 1: {folder}/notes.md)" in res.stats.summary()
    assert "of unknown type" not in res.stats.summary()  # said once, in the folder line
    # a folder of text files only is a text corpus; a .txt named on its own is loaded
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("one")
    (corpus / "b.txt").write_text("two")
    assert len(load_conversations(corpus).conversations) == 2
    assert len(load_conversations([folder, folder / "README.txt"]).conversations) == 3


def test_sftlab_train_prints_what_loading_skipped(tmp_path):
    folder = _folder(tmp_path)
    (folder / "b.csv").write_text("instruction,output\nReverse lazy.,yzal\n,\n")
    cfg = write_config(tmp_path, edited_config(tmp_path, data__train=[{"path": str(folder)}]))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["train", str(cfg)]) == 0, err.getvalue()[-2000:]
    text = out.getvalue() + err.getvalue()
    assert "skipped 1 empty CSV row(s)" in text and "skipped 1 text file(s) beside the structured data" in text
    assert "train: 2 examples" in text


def test_a_mapping_for_other_files_of_a_folder_is_noted_not_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"question": "Q", "answer": "A"}) + "\n")
    (folder / "b.jsonl").write_text(json.dumps({"messages": QA}) + "\n")
    res = load_conversations(folder, columns={"instruction": "question", "output": "answer"})
    assert len(res.conversations) == 2
    assert f"columns mapping not used in {folder}/b.jsonl: it has no column 'question', 'answer'" in res.stats.summary()
    (folder / "b.jsonl").write_text(json.dumps({"question": "Q", "anwser": "A"}) + "\n")  # some of them: a typo
    with pytest.raises(DataError, match=r"b.jsonl \[columns\]: the columns mapping names column\(s\) that the file does not have"):
        load_conversations(folder, columns={"instruction": "question", "output": "answer"})


def test_two_conversations_are_fine_when_the_format_is_chosen(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text(json.dumps({"messages": QA, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}) + "\n")
    (conv,) = load_conversations(path, format="sharegpt").conversations
    assert [m.content for m in conv.messages] == ["Hi", "Yo"]
    (conv,) = load_conversations(path, format="messages").conversations
    assert conv.messages[1].content == "elppa"
    # a `text` column beside `messages` is a rendered copy, not a second conversation
    path.write_text(json.dumps({"messages": QA, "text": "<|im_start|>user..."}) + "\n")
    (conv,) = load_conversations(path).conversations
    assert conv.meta["text"].startswith("<|im_start|>")


def test_assistant_first_is_allowed_after_a_system_prompt_and_for_saved_text_rows(tmp_path):
    from sftlab.conversation import Conversation
    from sftlab.data.save import save_conversations

    path = tmp_path / "ok.jsonl"
    rows = [{"messages": [{"role": "system", "content": "Greet first."}, {"role": "assistant", "content": "Hello!"}, *QA]},
            {"conversations": [{"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}],
             "system": "Greet first."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))
    assert len(load_conversations(path).conversations) == 1
    path.write_text(json.dumps(rows[1]) + "\n")
    assert len(load_conversations(path).conversations) == 1
    saved = tmp_path / "saved.jsonl"
    save_conversations([Conversation.document("A plain document.")], saved)
    (conv,) = load_conversations(saved).conversations
    assert conv.kind == "text" and conv.meta["format"] == "text"


# ---- the rejects file the data errors recommend -------------------------------------------------


def test_rejects_key_of_a_data_source_writes_the_skipped_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": QA}) + "\n" + json.dumps({"messages": [{"role": "assistant", "content": "Hi"}, *QA]}) + "\n")
    src = DataSourceConfig(path=str(path), rejects=str(tmp_path / "out" / "rejects.jsonl"))
    res = src.load(on_error="skip")
    assert len(res.conversations) == 1
    (reject,) = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert reject["source"] == f"{path}:2" and reject["reason"] == "starts_with_assistant"
    from sftlab.config import reference_markdown

    assert "| `rejects` |" in reference_markdown()


def test_rejects_key_works_in_sftlab_train(tmp_path):
    path = tmp_path / "data" / "d.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"messages": QA}) + "\n" for _ in range(4))
                    + json.dumps({"messages": [{"role": "assistant", "content": "Hi"}, *QA]}) + "\n")
    cfg = edited_config(tmp_path, data__train=[{"path": str(path), "rejects": str(tmp_path / "rejects.jsonl")}], data__on_error="skip")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["train", str(write_config(tmp_path, cfg))]) == 0, err.getvalue()[-2000:]
    (reject,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reject["source"] == f"{path}:5" and reject["reason"] == "starts_with_assistant"


# ---- length policy split: exact and linear -----------------------------------------------------


def _reference_length_policy(examples, max_len, policy):
    """apply_length_policy as it was before it was made linear (pieces found by scanning every turn
    end, and every token after each cut): the behaviour to keep, token for token."""
    rep = LengthReport(max_len=max_len, policy=policy)

    def cut(r, start, end):
        ids, mask = r.input_ids[start:end], list(r.loss_mask[start:end])
        ends = [t - start for t in r.turn_ends if start < t <= end]
        if r.kind != "text":
            last_end = ends[-1] if ends else 0
            if any(mask[last_end:]):
                mask[last_end:] = [0] * (len(mask) - last_end)
                rep.partial_turns_untrained += 1
        if start > 0:
            mask[0] = 0
        if not any(mask):
            rep.dropped_no_trained += 1
            return None
        return Rendered(ids, mask, ends, r.id, r.source, r.kind)

    out = []
    for r in examples:
        rep.examples_in += 1
        rep.tokens_in += len(r)
        rep.trained_tokens_in += r.n_trained
        if len(r) <= max_len:
            out.append(r)
            continue
        rep.too_long += 1
        if policy == "drop":
            rep.dropped += 1
            rep.dropped_ids.append(r.source or r.id)
            continue
        if policy == "truncate":
            rep.truncated += 1
            piece = cut(r, 0, max_len)
            if piece is not None:
                out.append(piece)
            continue
        start, pieces = 0, 0
        while start < len(r):
            if len(r) - start <= max_len:
                end = len(r)
            else:
                fits = [t for t in r.turn_ends if start < t <= start + max_len] if r.kind != "text" else []
                end = fits[-1] if fits else start + max_len
            piece = cut(r, start, end)
            if piece is not None:
                out.append(piece)
                pieces += 1
            if r.kind != "text" and not any(r.loss_mask[end:]):
                break
            start = end
        rep.split_into += pieces
    rep.examples_out = len(out)
    rep.tokens_out = sum(len(r) for r in out)
    rep.trained_tokens_out = sum(r.n_trained for r in out)
    return out, rep


def _random_rendered(rng: random.Random, i: int) -> Rendered:
    kind = rng.choice(["chat", "chat", "chat", "text"])
    n = rng.randint(1, 120)
    ids = [rng.randrange(400) for _ in range(n)]
    if kind == "text":
        return Rendered(ids, [0] + [1] * (n - 1), [n], f"t{i}", f"f:{i}", "text")
    mask, ends, pos = [], [], 0
    while pos < n:  # prompt span (untrained), then an answer span (trained) ending a turn
        p = min(n - pos, rng.randint(0, 15))
        mask += [0] * p
        pos += p
        a = min(n - pos, rng.randint(1, 25))
        mask += [1] * a
        pos += a
        if a and rng.random() < 0.9:
            ends.append(pos)
    if rng.random() < 0.2 and n > 2:
        mask[-1] = 0  # a closing newline after the last turn
    if rng.random() < 0.1:
        rng.shuffle(ends)  # not produced by render.py, but the function must keep its output for them too
    return Rendered(ids, mask, ends, f"c{i}", f"f:{i}", kind)


@pytest.mark.parametrize("policy", ["split", "truncate", "drop"])
def test_length_policy_matches_the_reference_on_random_examples(policy):
    rng = random.Random(16)
    for trial in range(300):
        examples = [_random_rendered(rng, i) for i in range(rng.randint(1, 6))]
        max_len = rng.randint(1, 60)
        got = apply_length_policy(examples, max_len, policy)
        want = _reference_length_policy(examples, max_len, policy)
        assert got == want, f"trial {trial}, max_len {max_len}"


class _CountingList(list):
    """A list that counts the elements its reads touch (slices by their length, an index as 1)."""

    reads = 0

    def __getitem__(self, key):
        got = super().__getitem__(key)
        _CountingList.reads += len(got) if isinstance(key, slice) else 1
        return got


def _long_example(n: int, kind: str, turn: int | None) -> Rendered:
    """One prompt and one answer of n tokens in all (turn=None), or n // turn turns of `turn` tokens
    (4 prompt, the rest answer, each ending a turn); a closing untrained token at the end."""
    if turn is None:
        mask, ends = [0] * 10 + [1] * (n - 11) + [0], [n - 1]
    else:
        mask = ([0] * 4 + [1] * (turn - 4)) * (n // turn)
        ends = list(range(turn, len(mask) + 1, turn))
        mask += [0] * (n - len(mask))
    return Rendered(_CountingList(range(n)), _CountingList(mask), ends, "big", "big.jsonl:1", kind)


@pytest.mark.parametrize("kind,turn", [("chat", None), ("chat", 10), ("text", None)])
def test_splitting_one_very_long_example_is_linear(kind, turn):
    """A 10 MB message used to take minutes: every piece re-read the whole rest of the example (and
    every turn end). A 300k-token example cut into 16-token pieces now reads each token a bounded
    number of times (the quadratic version read ~2.8e9 elements here), with the same output as the
    reference on a smaller example of the same shape."""
    n, max_len = 300_000, 16
    r = _long_example(n, kind, turn)
    _CountingList.reads = 0
    out, rep = apply_length_policy([r], max_len, "split")
    assert _CountingList.reads < 5 * n, f"{_CountingList.reads} reads for {n} tokens: not linear"
    assert rep.too_long == 1 and rep.split_into == len(out) > 0 and all(len(p) <= max_len for p in out)
    if kind == "text" or turn:  # every piece trains something (one huge chat turn: only its end does)
        assert len(out) >= n // max_len - 1
    small = _long_example(4000, kind, turn)
    assert apply_length_policy([small], max_len, "split") == _reference_length_policy([small], max_len, "split")
