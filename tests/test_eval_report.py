"""The report: JSON and text agree with the metrics, the HTML renders in headless Chromium with
every plot decoded, and `sftlab eval` writes both files from saved model folders.

CI needs Chromium for the rendering test: `apt-get install -y chromium` (Debian package; binary
/usr/bin/chromium). The test skips only when no chromium binary is on PATH.
"""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sftlab.builtin.tasks import train_eval_split
from sftlab.conversation import Conversation
from sftlab.evaluate.html_report import write_report_html
from sftlab.evaluate.ifeval import IFEvalPrompt
from sftlab.evaluate.runner import evaluate_models
from tiny import make_model, make_tokenizer

EVAL = [
    Conversation.from_messages([{"role": "user", "content": "Reverse the word apple."}, {"role": "assistant", "content": "elppa"}]),
    Conversation.from_messages([{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "The answer is 5."}]),
    Conversation.from_messages([{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": "I am fine, thank you."}]),
]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Sort these numbers: 3, 1, 2 -> 1, 2, 3", "Hello there! How are you today?"]
IFEVAL = [
    IFEvalPrompt("if1", "Write a haiku about foxes without any commas.", (("punctuation:no_comma", {}),)),
    IFEvalPrompt("if2", "Answer in lowercase letters only: what is a fox?", (("change_case:english_lowercase", {}), ("punctuation:no_comma", {}))),
    IFEvalPrompt("if3", "Describe a dog in at least 50 words.", (("length_constraints:number_words", {"num_words": 50, "relation": "at least"}),)),
]


@pytest.fixture(scope="module")
def report():
    tok = make_tokenizer()
    return evaluate_models(
        {"base": (make_model(seed=0), tok), "tuned": (make_model(seed=1), tok)},
        eval_conversations=EVAL,
        general_text=TEXTS,
        max_task_examples_per_family=1,
        task_max_new_tokens=4,
        ifeval_prompts=IFEVAL,
        ifeval_max_new_tokens=8,
        train_conversations=train_eval_split(seed=0)[0][:200],
        progress=False,
    )


def test_json_and_table_carry_every_metric(report):
    data = json.loads(json.dumps(report.to_json()))  # JSON-serialisable, no NaN
    names = [m["name"] for m in data["metrics"]]
    for want in ("response PPL (held-out instructions)", "general-text PPL", "ratio response PPL / general PPL",
                 "task accuracy: seen families", "task accuracy: held-out families", "IFEval prompt-level strict",
                 "IFEval instruction-level loose"):
        assert want in names
    ppl = {m["name"]: m for m in data["metrics"]}["general-text PPL"]
    assert ppl["values"]["base"]["value"] == pytest.approx(data["perplexity"]["base"]["general"]["perplexity"], rel=1e-5)
    diff = ppl["diff_vs_baseline"]["tuned"]
    assert diff["value"] == pytest.approx(ppl["values"]["tuned"]["value"] - ppl["values"]["base"]["value"], rel=1e-4)
    assert diff["ci_low"] <= diff["value"] <= diff["ci_high"]
    # IFEval: our per-prompt recount equals ifeval.py's own aggregate
    strict = {m["name"]: m for m in data["metrics"]}["IFEval instruction-level strict"]["values"]["tuned"]["value"]
    assert strict == pytest.approx(data["ifeval"]["tuned"]["instruction_strict"])
    assert data["settings"]["ifeval_max_new_tokens"] == 8 and data["settings"]["task_max_new_tokens"] == 4
    # every distinct eval prompt was checked: task and IFEval prompts and the held-out conversations
    assert data["decontamination"]["eval_prompts"] == len({*report.tasks.ids, *report.ifeval.ids, *(c.id for c in EVAL)})
    table = report.summary_table()
    assert "tuned - base [95% CI]" in table and "general-text PPL" in table
    assert f"{report.metrics()[1].values['tuned'].value:.3f}" in table


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('div'); out.id = 'probe';
  out.textContent = Array.from(document.images).map(i => i.complete + ':' + i.naturalWidth + 'x' + i.naturalHeight).join(' ');
  document.body.appendChild(out);
});</script></body>"""


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (CI: apt-get install -y chromium)")
def test_html_report_renders_with_decoded_plots(report, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 3.0 / s, **({"eval_loss": 3.2 / s} if s % 5 == 0 else {})}) + "\n" for s in range(1, 31)))
    html_path = write_report_html(report, tmp_path / "report.html", metrics_jsonl=metrics)
    text = html_path.read_text()
    n_imgs = text.count("<img ")
    assert n_imgs == 6  # loss curve, perplexities, task accuracy, per-family, IFEval, constraint pass rates
    assert "http://" not in text and "https://" not in text  # self-contained
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([_chromium(), *CHROME_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    sizes = re.search(r'<div id="probe">([^<]*)</div>', dom).group(1).split()
    assert len(sizes) == n_imgs
    for s in sizes:
        complete, wh = s.split(":")
        w, h = map(int, wh.split("x"))
        assert complete == "true" and w > 200 and h > 100, s  # every PNG decoded at plot size
    shot = tmp_path / "out.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_chromium(), *CHROME_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2000", html_path.as_uri()],
                       capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a page of tables and plots, not a blank page


def test_cli_eval_writes_html_json_and_prints_table(tmp_path, capsys):
    from sftlab.cli import main
    from sftlab.model import save_model

    tok = make_tokenizer()
    for name, seed in (("base", 0), ("tuned", 1)):
        save_model(make_model(seed=seed), tok, tmp_path / name)
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in EVAL))
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(TEXTS) + "\n")
    out = tmp_path / "out"
    rc = main(["eval", "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned"), "--data", str(data),
               "--general-text", str(general),
               "--no-ifeval", "--max-per-family", "1", "--task-max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "response PPL (held-out instructions)" in printed and "tuned - base [95% CI]" in printed
    js = json.loads((out / "report.json").read_text())
    assert js["models"] == ["base", "tuned"]
    resp = js["perplexity"]["base"]["response"]
    assert resp["examples"] == 3  # the --data file, not the built-in split
    assert js["perplexity"]["tuned"]["general"]["examples"] == len(TEXTS)
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3
