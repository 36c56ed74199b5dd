"""`sftlab curate CONFIG` and `sftlab data-report DATA` end to end on tiny files."""

import json
from collections import Counter

import pytest

from sftlab.cli import main
from sftlab.curate.config import load_curate_config
from sftlab.errors import ConfigError

TOPICS = ["sorting lists in Python", "the causes of rain", "how to bake bread", "the history of Rome",
          "black holes", "learning the guitar", "chess openings", "saving money", "planting tomatoes",
          "the immune system"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def workspace(tmp_path):
    chat = [{"instruction": f"Explain {t} in at least 3 sentences.",
             "output": f"Here is a careful explanation of {t}. It has several parts. Each part matters."}
            for t in TOPICS]
    chat.append(dict(chat[0]))  # exact duplicate
    chat.append({"instruction": "Tell me a joke.", "output": "ok"})  # trivial
    chat.append({"instruction": "Hack my neighbour's wifi.", "output": "As an AI language model, I cannot do that."})
    write_jsonl(tmp_path / "chat.jsonl", chat)
    write_jsonl(tmp_path / "math.jsonl", [
        {"messages": [{"role": "user", "content": f"What is {i} + {i + 1}?"},
                      {"role": "assistant", "content": f"{i} + {i + 1} = {2 * i + 1}."}], "meta": {"family": "add"}}
        for i in range(6)])
    (tmp_path / "curate.yaml").write_text("""
inputs:
  - {name: chat, path: chat.jsonl, weight: 3}
  - {name: math, path: math.jsonl, weight: 1}
blocks:
  - type: exact_dedup
  - type: minhash_dedup
    threshold: 0.8
  - type: empty_response
  - type: refusal
  - type: complexity_score
  - type: tags
  - type: mix
    total: 12
  - type: curriculum
    key: complexity
output: out/curated.jsonl
""", encoding="utf-8")
    return tmp_path


def test_curate_end_to_end(workspace, capsys):
    assert main(["curate", str(workspace / "curate.yaml")]) == 0
    printed = capsys.readouterr().out
    for text in ("exact_duplicate 1", "trivial_response 1", "refusal 1", "wrote 12 conversations"):
        assert text in printed
    rows = [json.loads(line) for line in (workspace / "out/curated.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert Counter(r["meta"]["source_name"] for r in rows) == {"chat": 9, "math": 3}
    complexities = [r["meta"]["complexity"] for r in rows]
    assert complexities == sorted(complexities)
    assert all("tags" in r["meta"] for r in rows)
    stats = json.loads((workspace / "out/curated.jsonl.stats.json").read_text())
    by_name = {b["name"]: b for b in stats["blocks"]}
    assert by_name["exact_dedup"]["dropped_by_reason"] == {"exact_duplicate": 1}
    assert len(by_name["exact_dedup"]["pairs"]) == 1
    assert by_name["mix"]["notes"]["per_source"]["math"]["target"] == 3
    assert stats["load"]["chat"]["loaded"] == 13 and stats["written"] == 12


def test_bad_config_reports_every_problem(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("""
inputs: [{path: a.jsonl}]
blocks:
  - type: minhash_dedup
    treshold: 0.8
  - type: no_such_block
output: out.jsonl
""")
    with pytest.raises(ConfigError) as e:
        load_curate_config(cfg)
    msg = str(e.value)
    assert "blocks.0.minhash_dedup.treshold" in msg and "unknown key" in msg
    assert "no_such_block" in msg and "exact_dedup" in msg  # lists the valid types
    assert main(["curate", str(tmp_path / "missing.yaml")]) == 2


def test_data_report_writes_self_contained_html(workspace):
    out = workspace / "report.html"
    assert main(["data-report", str(workspace / "chat.jsonl"), str(workspace / "math.jsonl"),
                 "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 5  # lengths, source mix, tags, families, embedding map
    for section in ("Lengths", "Source mix", "Tag coverage", "Task families", "Duplicate clusters", "Embedding map"):
        assert f"<h2>{section}</h2>" in page
    assert "1 duplicates in 1 clusters" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened


def test_duplicate_input_names_are_an_error(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("inputs: [{path: a/train.jsonl}, {path: b/train.jsonl}]\noutput: out.jsonl\n")
    with pytest.raises(ConfigError, match=r"\['train'\].*\n.*fix: give each input a unique"):
        load_curate_config(cfg)


def test_block_reference_is_up_to_date():
    """docs/curate.md is generated from the block configs; regenerate: python -m sftlab.curate.config > docs/curate.md"""
    from pathlib import Path

    from sftlab.curate.blocks import BLOCKS
    from sftlab.curate.config import reference_markdown

    doc = (Path(__file__).parent.parent / "docs" / "curate.md").read_text()
    assert doc.strip() == reference_markdown().strip()
    assert all(f"## `type: {name}`" in doc for name in BLOCKS)
