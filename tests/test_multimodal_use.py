"""Using a tuned LLaVA: generation with images (batched == one by one), `sftlab serve` with OpenAI
image_url parts (and what it refuses), `sftlab export --merge`, `sftlab chat --image`.

The models are tiny LLaVAs trained here for 2 steps (stage 1: projector; stage 2: LoRA + projector),
saved to disk as `sftlab train` saves them."""

import base64
import io
import json
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from PIL import Image

from helpers import make_model_folder
from sftlab.conversation import Conversation
from sftlab.generate import SamplingParams, generate_batch, stream_answer
from sftlab.render import Renderer

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 220), "yellow": (230, 210, 30)}
QUESTION = "What colour is it?"


def png_bytes(rgb, size=(32, 32)) -> bytes:
    im = Image.new("RGB", size, (255, 255, 255))
    im.paste(rgb, (4, 4, size[0] - 4, size[1] - 4))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(stage-1 folder, stage-2 LoRA folder, text-only model folder, {colour: image path})."""
    from sftlab.config import load_config
    from sftlab.train import train

    tmp = tmp_path_factory.mktemp("mm-use")
    paths = {}
    for name, rgb in COLOURS.items():
        paths[name] = tmp / f"{name}.png"
        paths[name].write_bytes(png_bytes(rgb))
    rows = [{"messages": [{"role": "user", "content": f"<image>\n{QUESTION}"}, {"role": "assistant", "content": f"It is {n}."}],
             "images": [str(p)]} for n, p in paths.items()] * 2
    data = tmp / "mm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text_model = make_model_folder(tmp)
    cfg = {"model": {"name": str(text_model)}, "lora": {"enabled": False},
           "multimodal": {"vision_encoder": "builtin:tiny-siglip", "image_size": 32, "patch_size": 16, "trainable": ["projector"]},
           "data": {"train": [{"path": str(data)}], "max_len": 128, "cache": False},
           "train": {"output_dir": str(tmp / "stage1"), "lr": 1e-2, "max_steps": 2, "tokens_per_batch": 128,
                     "warmup_ratio": 0.0, "save_every": 0}}
    stage1 = train(load_config(cfg)).final_dir
    cfg2 = {**cfg, "model": {"name": str(stage1)}, "lora": {"enabled": True, "r": 4, "alpha": 8},
            "multimodal": {"trainable": ["projector", "language_model"]},
            "train": {**cfg["train"], "output_dir": str(tmp / "stage2"), "lr": 5e-2}}
    stage2 = train(load_config(cfg2)).final_dir
    return stage1, stage2, text_model, paths


@pytest.fixture(scope="module")
def vlm(runs):
    """The stage-2 model as sftlab loads it for use: (PeftModel on the LLaVA, processor, renderer, vision)."""
    from sftlab.multimodal.use import load_vlm_model
    from sftlab.multimodal.vision import VisionInputs

    model, processor = load_vlm_model(str(runs[1]))
    return model, processor, Renderer(processor.tokenizer), VisionInputs(processor)


def prompts(paths):
    ask = lambda refs, text: Conversation.from_messages([{"role": "user", "content": "<image>\n" * len(refs) + text}],  # noqa: E731
                                                        images=[str(r) for r in refs])
    return [ask([paths["red"]], QUESTION), ask([paths["blue"]], QUESTION),
            Conversation.from_messages([{"role": "user", "content": "Hi"}]),  # text only, in the same batch
            ask([paths["green"], paths["yellow"]], "Are these the same colour? Answer yes or no."),
            ask([paths["yellow"]], "Describe the picture in a few words please, thank you.")]


def test_loading_a_vlm_and_its_adapter(runs, vlm):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    from sftlab.multimodal.use import is_vlm, load_vlm_model

    stage1, stage2, text_model, _ = runs
    assert is_vlm(str(stage1)) and is_vlm(str(stage2)) and not is_vlm(str(text_model)) and not is_vlm("org/none")
    model, processor, _, _ = vlm
    assert isinstance(model, PeftModel) and isinstance(model.get_base_model(), LlavaForConditionalGeneration)
    assert processor.tokenizer.pad_token is not None
    plain, _ = load_vlm_model(str(stage1))
    assert isinstance(plain, LlavaForConditionalGeneration)
    # what `sftlab eval` and the other text paths call (load_model / load_tokenizer) open them too
    from sftlab.model import load_model, load_tokenizer

    assert isinstance(load_model(str(stage1)), LlavaForConditionalGeneration)
    assert isinstance(load_model(str(stage2)).get_base_model(), LlavaForConditionalGeneration)
    assert load_tokenizer(str(stage2)).convert_tokens_to_ids("<image>") == processor.tokenizer.convert_tokens_to_ids("<image>")
    from sftlab.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="not a vision-language model"):
        load_vlm_model(str(text_model))


def test_batched_generation_with_images_equals_one_by_one(runs, vlm):
    model, _, rd, vision = vlm
    convs = prompts(runs[3])
    params = SamplingParams(max_new_tokens=10)
    batched = generate_batch(model, rd, convs, params, batch_size=8, progress=False, vision=vision)
    alone = [generate_batch(model, rd, [c], params, batch_size=1, progress=False, vision=vision)[0] for c in convs]
    assert batched == alone
    assert all(isinstance(a, str) for a in alone) and len(set(alone)) > 1
    for c, a in zip(convs, alone):  # streaming (chat, serve) gives the same text
        streamed = "".join(stream_answer(model, rd, c.to_dicts(), params, images=c.images, vision=vision)).strip()
        assert streamed == a


def test_images_reach_the_model(runs, vlm):
    from sftlab.multimodal.use import prompt_inputs

    model, _, rd, vision = vlm
    paths = runs[3]
    msgs = [{"role": "user", "content": f"<image>\n{QUESTION}"}]
    logits = {}
    with torch.no_grad():
        for name in ("red", "blue"):
            ids, extra = prompt_inputs(vision, rd, msgs, [str(paths[name])])
            assert ids.count(vision.image_token_id) == 4  # (32 / 16)^2 image tokens
            assert extra["pixel_values"].shape == (1, 3, 32, 32)
            logits[name] = model(input_ids=torch.tensor([ids]), pixel_values=extra["pixel_values"]).logits[0, -1]
        # a PIL image gives the same inputs as its file
        ids_pil, extra_pil = prompt_inputs(vision, rd, msgs, [Image.open(paths["red"]).convert("RGB")])
        assert ids_pil == prompt_inputs(vision, rd, msgs, [str(paths["red"])])[0]
    assert (logits["red"] - logits["blue"]).abs().max() > 1e-4
    # placeholders and images must match; a text-only call cannot carry images
    with pytest.raises(ValueError):
        prompt_inputs(vision, rd, msgs, [])
    with pytest.raises(ValueError):
        generate_batch(model, rd, prompts(paths)[:1], SamplingParams(max_new_tokens=2), progress=False)


# ---- sftlab serve ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm_server(runs):
    from sftlab.serve import build_app, server_in_thread

    app = build_app(str(runs[1]), default_max_tokens=8, log=None)
    with server_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def text_server(runs):
    from sftlab.serve import build_app, server_in_thread

    app = build_app(str(runs[2]), default_max_tokens=8, log=None)
    with server_in_thread(app) as url:
        yield url


def image_message(*urls, text=QUESTION):
    return [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in urls),
                                         {"type": "text", "text": text}]}]


def test_serve_answers_the_openai_client_with_an_image(runs, vlm, vlm_server):
    url, _ = vlm_server
    model, _, rd, vision = vlm
    paths = runs[3]
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    answers = {}
    for name in ("red", "blue"):
        msgs = image_message(data_url(paths[name].read_bytes()))
        r = client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
        answers[name] = r.choices[0].message.content
        # the same answer as generate_batch gives for the same conversation (parts joined by \n, as in training data)
        conv = Conversation.from_messages([{"role": "user", "content": f"<image>\n{QUESTION}"}], images=[str(paths[name])])
        assert answers[name] == generate_batch(model, rd, [conv], SamplingParams(max_new_tokens=8), progress=False, vision=vision)[0]
        assert r.usage.prompt_tokens == len(rd.render_prompt(conv)) + 3  # one <image> became 4 image tokens
        stream = client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0, stream=True)
        pieces = [c.choices[0].delta.content or "" for c in stream]
        assert "".join(pieces).strip() == answers[name]


def _post(url, messages, **extra):
    return httpx.post(f"{url}/chat/completions", json={"messages": messages, "max_tokens": 4, **extra}, timeout=60)


def test_serve_refuses_what_it_should(runs, vlm_server, text_server, tmp_path):
    url, app = vlm_server
    paths = runs[3]
    good = data_url(paths["red"].read_bytes())

    def refused(base, messages, code, param=None):
        r = _post(base, messages)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == code, err
        if param:
            assert err["param"] == param
        return err["message"]

    msg = refused(url, image_message("https://example.com/cat.png"), "remote_image_refused", "messages[0].content[0].image_url")
    assert "--allow-remote-images" in msg and "data:" in msg
    msg = refused(url, image_message(str(paths["red"])), "local_image_refused")
    assert "--allow-local-images" in msg
    refused(url, image_message(paths["red"].as_uri()), "local_image_refused")
    refused(url, image_message("ftp://host/x.png"), "invalid_image_url")
    refused(url, image_message(*[good] * 9), "too_many_images")
    refused(url, image_message("data:image/png;base64,!!!not base64!!!"), "invalid_image_url")
    refused(url, image_message("data:image/png;base64," + base64.b64encode(b"not an image at all").decode()), "invalid_image")
    truncated = paths["red"].read_bytes()[:60]
    refused(url, image_message(data_url(truncated)), "invalid_image")
    # a decompression bomb: a small PNG whose header says 5000 x 5000 = 25 MP (over 20 MP): refused before decoding
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000
    msg = refused(url, image_message(data_url(buf.getvalue())), "image_too_large")
    assert "25,000,000" in msg
    r = _post(url, [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}])
    assert r.status_code == 400 and "image_url" in r.json()["error"]["message"]
    refused(url, [{"role": "user", "content": "a typed <image> placeholder"}], "special_token_in_content")
    # an image in an assistant message
    refused(url, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": good}}]},
                  {"role": "user", "content": "and?"}], "invalid_image_url", "messages[1].content[0].image_url")
    # a text-only model: the image part is refused, naming it
    msg = refused(text_server, image_message(good), "images_not_supported", "messages[0].content[0].image_url")
    assert "text-only" in msg
    # ... and the official client raises its usual error with our message
    client = openai.OpenAI(base_url=text_server, api_key="none", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="text-only"):
        client.chat.completions.create(model="x", messages=image_message(good), max_tokens=2)
    # text parts alone still work on both
    assert _post(text_server, [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]).status_code == 200
    assert _post(url, [{"role": "user", "content": "Hi"}]).status_code == 200
    # the server still answers an image afterwards
    assert _post(url, image_message(good)).status_code == 200


def test_local_and_remote_images_only_when_allowed(runs, vlm):
    from sftlab.serve import ApiError, ChatEngine, ChatRequest

    model, processor, _, _ = vlm
    paths = runs[3]
    local = ChatEngine(model, processor.tokenizer, "m", processor=processor, allow_local_images=True)
    req = ChatRequest(messages=image_message(str(paths["red"])))
    inline = ChatEngine(model, processor.tokenizer, "m", processor=processor).prepare(
        ChatRequest(messages=image_message(data_url(paths["red"].read_bytes()))))
    prepared = local.prepare(req)
    assert prepared.prompt_ids == inline.prompt_ids
    assert torch.equal(prepared.inputs["pixel_values"], inline.inputs["pixel_values"])
    assert local.prepare(ChatRequest(messages=image_message(paths["red"].as_uri()))).prompt_ids == inline.prompt_ids
    with pytest.raises(ApiError, match="image file not found"):
        local.prepare(ChatRequest(messages=image_message(str(paths["red"]) + ".missing")))
    # remote allowed but offline (tests never touch the network): a clear 400, not a hang
    remote = ChatEngine(model, processor.tokenizer, "m", processor=processor, allow_remote_images=True)
    with pytest.raises(ApiError) as e:
        remote.prepare(ChatRequest(messages=image_message("https://example.invalid/x.png")))
    assert e.value.status == 400 and e.value.code == "image_download_failed"


# ---- export --merge, chat --image --------------------------------------------------------------------
def test_export_merge_gives_a_plain_transformers_vlm(runs, vlm, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from sftlab.cli import main
    from sftlab.multimodal.use import prompt_inputs

    model, _, rd, vision = vlm
    out = tmp_path / "merged"
    assert main(["export", str(runs[1]), "--merge", "--out", str(out)]) == 0
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    proc = AutoProcessor.from_pretrained(out)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    image = Image.open(runs[3]["green"]).convert("RGB")
    inputs = proc(text=proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), images=[image], return_tensors="pt")
    ids, extra = prompt_inputs(vision, rd, [{"role": "user", "content": f"<image>\n{QUESTION}"}], [image])
    assert inputs["input_ids"][0].tolist() == ids  # the processor's own template + expansion == ours
    with torch.no_grad():
        ref = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        got = merged(**inputs).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    # and loaded through sftlab it is a VLM again (no adapter)
    from sftlab.multimodal.use import is_vlm

    assert is_vlm(str(out))
    # without --merge: the adapter as it is, with the processor files; it loads on its base as before
    plain = tmp_path / "adapter"
    assert main(["export", str(runs[1]), "--out", str(plain)]) == 0
    assert (plain / "adapter_config.json").is_file() and (plain / "processor_config.json").is_file()
    from sftlab.multimodal.use import load_vlm_model

    again, _ = load_vlm_model(str(plain))
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits, ref,
                                   atol=1e-6, rtol=0)


def test_chat_with_an_image_through_the_cli(runs, vlm, capsys, monkeypatch):
    from sftlab.cli import main
    from sftlab.commands.model_cmd import run_chat

    model, _, rd, vision = vlm
    stage2, paths = str(runs[1]), runs[3]
    expected = {n: generate_batch(model, rd, [Conversation.from_messages([{"role": "user", "content": f"<image>\n{QUESTION}"}],
                                                                         images=[str(paths[n])])],
                                  SamplingParams(max_new_tokens=6), progress=False, vision=vision)[0] for n in ("red", "blue")}
    assert main(["chat", stage2, "--image", str(paths["red"]), "--prompt", QUESTION, "--max-tokens", "6"]) == 0
    assert capsys.readouterr().out.strip() == expected["red"]
    # interactive: --image goes with the first message; /image attaches one to the next; /reset forgets them
    args = SimpleNamespace(model=stage2, prompt=None, system=None, max_tokens=6, temperature=0.0, top_p=1.0, seed=0,
                           image=[str(paths["red"])])
    out = io.StringIO()
    script = f"{QUESTION}\n/reset\n/image {paths['blue']}\n{QUESTION}\n/image /no/such.png\n/exit\n"
    assert run_chat(args, stdin=io.StringIO(script), stdout=out) == 0
    text = out.getvalue()
    answers = [line.split("assistant> ", 1)[1] for line in text.splitlines() if "assistant> " in line]
    assert answers == [expected["red"], expected["blue"]]
    assert "image attached" in text and "cannot use image /no/such.png" in text
    # a text-only model refuses --image with a clean error
    assert main(["chat", str(runs[2]), "--image", str(paths["red"]), "--prompt", "hi"]) == 2
    assert "vision-language" in capsys.readouterr().err


def test_vision_eval_against_by_hand_scores_and_losses(runs, tmp_path):
    """sftlab.multimodal.evaluate on the tiny stage-1 and stage-2 models: batched answers equal one-at-a-time
    answers; `correct` is the checker on them; each gold answer's loss sum equals a textbook cross-entropy
    over the answer tokens (+ stop token) from a plain forward of the processor's own chat-template inputs;
    accuracies, paired differences and the blind constant equal counts by hand; the report shows every image."""
    import math

    import torch.nn.functional as F

    from sftlab.multimodal.evaluate import answer, evaluate_vision, write_report
    from sftlab.multimodal.images import load_image
    from sftlab.multimodal.use import load_vlm_model

    stage1, stage2, _, paths = runs
    names = list(paths)
    gold_yes = ["Yes.", "Yes.", "Yes.", "No."]
    convs = [Conversation.from_messages([{"role": "user", "content": f"<image>\n{QUESTION}"},
                                         {"role": "assistant", "content": f"It is {n}."}],
                                        images=[str(paths[n])], meta={"family": "colour", "split": "seen"}) for n in names]
    convs += [Conversation.from_messages([{"role": "user", "content": f"<image>\nIs it {names[(k + 1) % 4]}?"},
                                          {"role": "assistant", "content": g}],
                                         images=[str(paths[n])], meta={"family": "yesno", "split": "held-out"})
              for k, (n, g) in enumerate(zip(names, gold_yes))]
    models = {"s1": load_vlm_model(str(stage1)), "s2": load_vlm_model(str(stage2), merge_adapter=True)}
    check = lambda c, a: a.strip().lower().startswith(c.last_response.strip(". ").lower())  # noqa: E731
    ev = evaluate_vision(models, convs, check, max_new_tokens=6, batch_size=3, log=lambda *a: None)

    for name, (model, processor) in models.items():
        r = ev.results[name]
        assert r.answers == answer(model, processor, convs, max_new_tokens=6, batch_size=1)
        assert r.correct == [int(check(c, a)) for c, a in zip(convs, r.answers)]
        tok = processor.tokenizer
        for k, c in enumerate(convs):
            msgs = [m.to_dict() for m in c.messages]
            full = processor.apply_chat_template(msgs, tokenize=False)
            prompt = processor.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
            assert full.startswith(prompt)
            image = [load_image(c.images[0])]
            ids = processor(text=full, images=image, return_tensors="pt")
            n_prompt = processor(text=prompt, images=image, return_tensors="pt")["input_ids"].shape[1]
            target = ids["input_ids"][0, n_prompt:].tolist()
            target = target[: target.index(tok.eos_token_id) + 1]  # the answer and its stop token, not what follows
            with torch.no_grad():
                logits = model(**ids).logits[0].float()
            pos = torch.arange(n_prompt, n_prompt + len(target))
            want = F.cross_entropy(logits[pos - 1], torch.tensor(target), reduction="sum").item()
            assert r.n_tokens[k] == len(target), (name, k)
            assert math.isclose(r.loss_sums[k], want, rel_tol=1e-4, abs_tol=1e-4), (name, k, r.loss_sums[k], want)

    s1, s2 = ev.results["s1"].correct, ev.results["s2"].correct
    assert ev.accuracy("s2", "seen").value == sum(s2[:4]) / 4 and ev.accuracy("s1", "all").value == sum(s1) / 8
    assert ev.accuracy_diff("s1", "s2", "held-out").value == (sum(s2[4:]) - sum(s1[4:])) / 4
    # the blind constant: "it is <colour>." is different for each image (1 of 4), "yes." is 3 of 4
    assert ev.constant_baseline("colour") == 0.25 and ev.constant_baseline("yesno") == 0.75
    assert ev.constant_baseline("all") == (1 + 3) / 8
    js = ev.to_json()
    assert js["blind_constant"]["held-out"] == 0.75 and set(js["above_blind"]) == {"s1", "s2"}
    assert "blind constant" in ev.summary_table()
    page = write_report(ev, tmp_path / "report.html").read_text()
    assert page.count('class="thumb"') == 8
