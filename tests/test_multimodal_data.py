"""Loading image conversations (issue 18): every accepted shape (OpenAI image parts, TRL `images`, LLaVA
`image` + `conversations`, Parquet image structs, `datasets` Image columns), how references resolve
(relative to the data file or `image_dir`, file://, data:, http(s) with a cache), and every way a row's
images can be wrong (missing, truncated, remote while offline, placeholder counts), in both on_error
modes. The bad-input doc's image cases are in tests/test_data_bad_input.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from sftlab.conversation import IMAGE_PLACEHOLDER, Conversation
from sftlab.data import DataSourceConfig, load_conversations, save_conversations
from sftlab.errors import ConfigError, DataError
from sftlab.multimodal.images import (
    check_image,
    image_cache_dir,
    load_image,
    remote_cache_path,
    resolve_image_ref,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test gets its own sftlab cache (downloaded and stored images go there)."""
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))


def png(path: Path, color=RED, size=(6, 4), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path, format="PNG")
    return path


def png_bytes(color=RED, size=(6, 4), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def truncated_png(path: Path) -> Path:
    """A real PNG of noise cut in half: the header reads, the pixels do not."""
    im = Image.frombytes("RGB", (40, 40), bytes((i * 7919) % 251 for i in range(40 * 40 * 3)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def user_assistant(user, answer="It is red."):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def only_problem(info) -> tuple[str, str, str]:
    (p,) = info.value.problems
    return p.where, p.field, p.message


def color_of(ref: str) -> tuple[int, int, int]:
    return load_image(ref).getpixel((0, 0))


# ---- the shapes that load --------------------------------------------------------------------


def test_openai_image_parts_become_placeholders_in_order(tmp_path):
    a, b, c = png(tmp_path / "a.png", RED), png(tmp_path / "sub" / "b.png", GREEN), png(tmp_path / "c.png", BLUE)
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Compare"},
                                     {"type": "image_url", "image_url": {"url": "a.png"}},
                                     {"type": "image_url", "image_url": str(b)},
                                     {"type": "text", "text": "which is greener?"}]},
        {"role": "assistant", "content": "The second."},
        {"role": "user", "content": [{"type": "image", "image": "c.png"}, {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": "Blue."}]}])
    (conv,) = load_conversations(p).conversations
    assert conv.messages[0].content == "Compare\n<image>\n<image>\nwhich is greener?"
    assert conv.messages[2].content == "<image>\nAnd this?"
    assert conv.images == (str(a), str(b), str(c))
    assert [color_of(r) for r in conv.images] == [RED, GREEN, BLUE]
    assert conv.meta["format"] == "messages" and "images" not in conv.meta


def test_trl_images_list_fills_bare_parts_and_text_placeholders_in_order(tmp_path):
    """Bare {"type": "image"} parts and `<image>` in text take the row's `images` in order; a part with its
    own reference takes none of them but keeps its place."""
    for name, color in (("first.png", RED), ("own.png", GREEN), ("second.png", BLUE)):
        png(tmp_path / name, color)
    p = write_jsonl(tmp_path / "trl.jsonl", [{
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "image_url", "image_url": {"url": "own.png"}},
                                         {"type": "text", "text": "What changed?"}]},
            {"role": "assistant", "content": "The colour."},
            {"role": "user", "content": "And in <image>?"},
            {"role": "assistant", "content": "Blue."}],
        "images": ["first.png", "second.png"]}])
    (conv,) = load_conversations(p).conversations
    assert conv.messages[0].content == "<image>\n<image>\nWhat changed?"
    assert conv.messages[2].content == "And in <image>?"
    assert [Path(r).name for r in conv.images] == ["first.png", "own.png", "second.png"]
    assert [color_of(r) for r in conv.images] == [RED, GREEN, BLUE]


def test_llava_json_file(tmp_path):
    png(tmp_path / "coco" / "train2017" / "1.png", RED)
    png(tmp_path / "coco" / "train2017" / "2.png", GREEN)
    png(tmp_path / "coco" / "train2017" / "3.png", BLUE)
    rows = [
        {"id": "1", "image": "coco/train2017/1.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
        {"id": "2", "image": "coco/train2017/2.png", "conversations": [  # no placeholder: LLaVA puts one first
            {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "Green."}]},
        {"id": "3", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
        {"id": "4", "image": ["coco/train2017/2.png", "coco/train2017/3.png"], "conversations": [
            {"from": "human", "value": "Which is bluer?"}, {"from": "gpt", "value": "The second."}]},
    ]
    p = tmp_path / "llava_instruct.json"
    p.write_text(json.dumps(rows))
    result = load_conversations(p)
    one, two, three, four = result.conversations
    assert [c.id for c in result.conversations] == ["1", "2", "3", "4"]
    assert one.messages[0].content == "<image>\nWhat colour is it?" and one.messages[2].content == "Sure?"
    assert one.images == (str(tmp_path / "coco" / "train2017" / "1.png"),)
    assert two.messages[0].content == "<image>\nWhat colour is it?"
    assert three.images == () and three.messages[0].content == "Say hi."
    assert four.messages[0].content == "<image>\n<image>\nWhich is bluer?"
    assert [color_of(r) for r in four.images] == [GREEN, BLUE]
    assert one.source == f"{p}:[0]" and one.meta["format"] == "sharegpt" and "image" not in one.meta
    stats = result.stats
    assert (stats.images, stats.image_rows, stats.image_placeholders_added) == (4, 3, 2)
    summary = stats.summary()
    assert "images: 4 in 3 row(s)" in summary
    assert "before the first user turn of 2 row(s) that had images but no `<image>` placeholder" in summary


def test_sharegpt_system_field_and_alpaca_with_image(tmp_path):
    png(tmp_path / "x.png")
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Describe the image.", "output": "A red square.", "image": "x.png"}])
    s = write_jsonl(tmp_path / "s.jsonl", [
        {"system": "You see images.", "conversations": [{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Red."}],
         "images": ["x.png"]}])
    alpaca, sharegpt = load_conversations([a, s]).conversations
    assert [(m.role, m.content) for m in alpaca.messages] == [("user", "<image>\nDescribe the image."), ("assistant", "A red square.")]
    assert [(m.role, m.content) for m in sharegpt.messages][:2] == [("system", "You see images."), ("user", "<image>\nColour?")]
    assert alpaca.images == sharegpt.images == (str(tmp_path / "x.png"),)


def test_image_dir_resolves_relative_paths(tmp_path):
    data = write_jsonl(tmp_path / "data" / "d.jsonl", [{"messages": user_assistant("<image>\nColour?"), "images": ["pics/r.png"]}])
    png(tmp_path / "images" / "pics" / "r.png", RED)
    with pytest.raises(DataError) as info:
        load_conversations(data)  # relative to the data file's folder by default: not there
    where, field, message = only_problem(info)
    assert (where, field) == (f"{data}:1", "images[0]")
    assert f"image file not found: {tmp_path / 'data' / 'pics' / 'r.png'}" in message
    assert "relative to the data file's folder" in message and "image_dir" in str(info.value)

    (conv,) = load_conversations(data, image_dir=tmp_path / "images").conversations
    assert conv.images == (str(tmp_path / "images" / "pics" / "r.png"),)
    (conv,) = DataSourceConfig(path=str(data), image_dir=str(tmp_path / "images")).load().conversations
    assert conv.images == (str(tmp_path / "images" / "pics" / "r.png"),)

    with pytest.raises(DataError) as info:  # a wrong image_dir: the message says it was image_dir
        load_conversations(data, image_dir=tmp_path / "data")
    assert "relative to the source's image_dir" in str(info.value) and "correct `image_dir:`" in str(info.value)
    with pytest.raises(ConfigError, match="image_dir=.*does not exist"):
        load_conversations(data, image_dir=tmp_path / "nope")


def test_image_dir_of_a_curate_input_is_relative_to_the_config(tmp_path):
    from sftlab.curate.config import CurateConfig

    cfg = CurateConfig.model_validate({"inputs": [{"path": "d.jsonl", "image_dir": "imgs"}], "output": "o.jsonl"})
    assert cfg.resolve(tmp_path).inputs[0].image_dir == str(tmp_path / "imgs")


def test_data_url_and_file_url(tmp_path):
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(GREEN, (3, 5))).decode()
    spaced = png(tmp_path / "with space.png", BLUE)
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                                   {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": "Green."}]},
        {"messages": user_assistant("<image> Colour?", "Blue."), "images": [spaced.as_uri()]},
    ])
    green, blue = load_conversations(p).conversations
    assert green.images == (data_url,)
    image = load_image(green.images[0])
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (3, 5), GREEN)
    assert spaced.as_uri().startswith("file://") and "%20" in spaced.as_uri()
    assert blue.images == (str(spaced),)


def test_parquet_image_structs_are_stored_once_by_content(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jpeg = png_bytes(BLUE, (8, 8), fmt="JPEG")
    png(tmp_path / "on_disk.png", GREEN)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "messages": [user_assistant("<image> and <image>?", "Red, then blue."), user_assistant("<image>?", "Green.")],
        "images": pa.array([[{"bytes": png_bytes(RED), "path": None}, {"bytes": jpeg, "path": "photo.jpg"}],
                            [{"bytes": None, "path": "on_disk.png"}]], type=pa.list_(struct)),
    })
    pq.write_table(table, tmp_path / "d.parquet")
    first, second = load_conversations(tmp_path / "d.parquet").conversations
    red_ref, blue_ref = first.images
    assert Path(red_ref) == image_cache_dir() / (hashlib.sha1(png_bytes(RED)).hexdigest() + ".png")
    assert Path(blue_ref) == image_cache_dir() / (hashlib.sha1(jpeg).hexdigest() + ".jpg")
    assert Path(blue_ref).read_bytes() == jpeg  # the original bytes, not re-encoded
    assert color_of(red_ref) == RED
    assert second.images == (str(tmp_path / "on_disk.png"),)  # a path-only struct: relative to the file
    assert "images" not in first.meta


def test_datasets_image_columns_saved_to_disk_and_as_object(tmp_path):
    import datasets

    jpeg = png_bytes(RED, (8, 8), fmt="JPEG")
    (tmp_path / "red.jpg").write_bytes(jpeg)
    features = datasets.Features({
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "images": datasets.List(datasets.Image()),
    })
    ds = datasets.Dataset.from_dict({
        "messages": [user_assistant("<image>\nColour?", "Red."), user_assistant("Two: <image> <image>", "Red, green.")],
        # embedded bytes; a path the dataset only points to; a PIL image (datasets stores it as PNG bytes)
        "images": [[{"bytes": jpeg, "path": "red.jpg"}], [str(tmp_path / "red.jpg"), Image.new("RGB", (2, 2), GREEN)]],
    }, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    for source in (str(tmp_path / "saved"), ds):
        one, two = load_conversations(source).conversations
        assert one.source.endswith("[train][0]") and two.source.endswith("[train][1]")
        stored = Path(one.images[0])
        assert stored == image_cache_dir() / (hashlib.sha1(jpeg).hexdigest() + ".jpg")
        assert stored.read_bytes() == jpeg  # the image file's own bytes, not decoded and encoded again
        if isinstance(source, str):  # save_to_disk embedded the file's bytes: the same bytes, stored once
            assert two.images[0] == one.images[0]
        else:  # in memory the dataset only points to the file
            assert two.images[0] == str(tmp_path / "red.jpg")
        assert Path(two.images[1]).parent == image_cache_dir() and Path(two.images[1]).suffix == ".png"
        assert [color_of(r) for r in two.images] == [color_of(str(tmp_path / "red.jpg")), GREEN]
        assert two.messages[0].content == "Two: <image> <image>"


def test_datasets_single_image_column_llava_style(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({
        "conversations": [[{"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Blue."}]],
        "image": [Image.new("RGB", (3, 3), BLUE)],
    }, features=datasets.Features({
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
        "image": datasets.Image()}))
    (conv,) = load_conversations(ds).conversations
    assert conv.messages[0].content == "<image>\nColour?"
    assert color_of(conv.images[0]) == BLUE


def test_saved_conversations_load_back_with_their_images(tmp_path):
    png(tmp_path / "r.png")
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": user_assistant("<image>\nColour?"), "images": ["r.png"]}])
    (conv,) = load_conversations(p).conversations
    save_conversations([conv], tmp_path / "out" / "saved.jsonl")
    (again,) = load_conversations(tmp_path / "out" / "saved.jsonl").conversations
    assert again.images == conv.images and again.messages == conv.messages and again.id == conv.id


# ---- what is refused, and how ----------------------------------------------------------------


def test_truncated_and_non_image_files_are_unreadable(tmp_path):
    truncated_png(tmp_path / "cut.png")
    (tmp_path / "notes.png").write_text("not an image")
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Colour?"},
                                                   {"type": "image_url", "image_url": {"url": "cut.png"}}]},
                      {"role": "assistant", "content": "Red."}]},
        {"messages": user_assistant("<image>"), "image": "notes.png"},
    ])
    with pytest.raises(DataError) as info:
        load_conversations(p)
    cut, notes = info.value.problems
    assert (cut.where, cut.field) == (f"{p}:1", "messages[0].content[1].image_url.url")
    assert "truncated" in cut.message and str(tmp_path / "cut.png") in cut.message
    assert (notes.where, notes.field) == (f"{p}:2", "image")
    assert "not an image file" in notes.message
    assert check_image(str(tmp_path / "cut.png")) is not None
    assert check_image(str(png(tmp_path / "ok.png"))) is None
    with pytest.raises(DataError, match="truncated"):
        load_image(str(tmp_path / "cut.png"))


def test_missing_file_names_file_line_and_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": str(tmp_path / "gone.png")}, {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "x"}]}])
    with pytest.raises(DataError) as info:
        load_conversations(p)
    assert only_problem(info) == (f"{p}:1", "messages[0].content[0].image",
                                  f"image file not found: {tmp_path / 'gone.png'}")
    assert "fix: put the image there" in str(info.value)


@pytest.mark.parametrize("row, field, words", [
    ({"messages": user_assistant("<image> vs <image>"), "images": ["a.png"]}, "images",
     ["2 `<image>` placeholder(s)", "1 image(s) in `images`"]),
    ({"messages": user_assistant("<image> only"), "image": ["a.png", "b.png"]}, "image",
     ["2 image(s) in `image`", "only 1 `<image>` placeholder(s)"]),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "image"}]},
                   {"role": "assistant", "content": "x"}]}, "messages[0].content[1]",
     ["1 `<image>` placeholder(s)", "no `images` list"]),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}]},
                   {"role": "assistant", "content": "x"}], "images": ["b.png"]}, "images",
     ["1 image(s) in `images`", "only 0 `<image>` placeholder(s)", "1 image part(s) with their own url"]),
    ({"messages": user_assistant("<image>"), "images": ["a.png"], "image": "b.png"}, "image", ["both `images` and `image`"]),
    # a plain (text) row has no user turn to put a missing placeholder in
    ({"text": "A red square.", "image": "a.png"}, "image", ["no `<image>` placeholder and no user turn"]),
    ({"text": "<image><image>A red square.", "image": "a.png"}, "image", ["2 `<image>` placeholder(s)", "1 image(s) in `image`"]),
])
def test_placeholder_counts_that_do_not_match(tmp_path, row, field, words):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    p = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError) as info:
        load_conversations(p)
    where, got_field, message = only_problem(info)
    assert (where, got_field) == (f"{p}:1", field)
    for w in words:
        assert w in message, message
    assert "fix:" in str(info.value)


def test_remote_url_while_offline(tmp_path, monkeypatch):
    url = "https://example.com/cat.png"
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": user_assistant("<image>"), "images": [url]}])
    for var in ("HF_HUB_OFFLINE", "SFTLAB_OFFLINE"):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv(var, "1")
        with pytest.raises(DataError) as info:
            load_conversations(p)
        where, field, message = only_problem(info)
        assert (where, field) == (f"{p}:1", "images[0]")
        assert "remote image while offline" in message and url in message
        assert "download the image and point to the file" in str(info.value)
        with pytest.raises(DataError, match="download the image and point to the file"):
            load_image(url)
        monkeypatch.delenv(var)
    # already downloaded: used offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = remote_cache_path(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(png_bytes(GREEN))
    (conv,) = load_conversations(p).conversations
    assert conv.images == (url,)
    assert color_of(url) == GREEN


def test_remote_url_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SFTLAB_OFFLINE", raising=False)
    calls = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def fake_urlopen(req, timeout):
        calls.append((req.full_url, timeout))
        return Response(png_bytes(BLUE))

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    url = "http://images.example/x/dog.JPG?size=small"
    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": user_assistant("<image>"), "images": [url]},
                                           {"messages": user_assistant("<image> again"), "images": [url]}])
    convs = load_conversations(p).conversations
    assert [c.images for c in convs] == [(url,), (url,)]
    assert color_of(url) == BLUE
    assert calls == [(url, 30)]  # checked at load, loaded later: one download
    assert remote_cache_path(url) == image_cache_dir() / (hashlib.sha1(url.encode()).hexdigest() + ".jpg")
    assert remote_cache_path(url).exists()


def test_skip_mode_counts_and_writes_every_rejected_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    png(tmp_path / "ok.png")
    truncated_png(tmp_path / "cut.png")
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": user_assistant("<image>\nColour?"), "images": ["ok.png"]},
        {"messages": user_assistant("<image>"), "images": ["missing.png"]},
        {"messages": user_assistant("<image>"), "images": ["cut.png"]},
        {"messages": user_assistant("<image><image>"), "images": ["ok.png"]},
        {"messages": user_assistant("<image>"), "images": ["s3://bucket/x.png"]},
        {"messages": user_assistant("Colour?"), "images": ["ok.png"]},
    ])
    rejects = tmp_path / "rejects.jsonl"
    result = load_conversations(p, on_error="skip", rejects_path=rejects)
    assert [c.source for c in result.conversations] == [f"{p}:1", f"{p}:6"]
    assert result.stats.skipped == {"missing_image": 1, "unreadable_image": 1, "too_many_placeholders": 1,
                                    "bad_image_ref": 1}
    written = [json.loads(ln) for ln in rejects.read_text().splitlines()]
    assert [(r["source"], r["reason"]) for r in written] == [
        (f"{p}:2", "missing_image"), (f"{p}:3", "unreadable_image"), (f"{p}:4", "too_many_placeholders"),
        (f"{p}:5", "bad_image_ref")]
    assert "[images[0]]" in written[0]["problems"][0] and "s3://" in written[3]["problems"][0]
    assert "skipped 4 rows" in result.stats.summary()

    # Parquet bytes that do not decode: skipped, and the rejects file shows their size, not the bytes
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"messages": [user_assistant("<image>"), user_assistant("<image>")],
                             "image": pa.array([{"bytes": png_bytes(), "path": None}, {"bytes": b"\x89PNG-broken", "path": None}],
                                               type=struct)}), tmp_path / "d.parquet")
    result = load_conversations(tmp_path / "d.parquet", on_error="skip", rejects_path=rejects)
    assert result.stats.loaded == 1 and result.stats.skipped == {"unreadable_image": 1}
    (reject,) = [json.loads(ln) for ln in rejects.read_text().splitlines()]
    assert reject["source"] == f"{tmp_path / 'd.parquet'}:row 1" and reject["row"]["image"]["bytes"] == "<11 bytes>"


# ---- text rows are as they were ----------------------------------------------------------------


def test_placeholder_text_without_images_stays_text_and_is_reported(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": user_assistant("What does the HTML tag <image> do?", "Nothing: it is <img>.")},
        {"messages": user_assistant("Plain question", "Plain answer"), "images": []},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                      {"role": "assistant", "content": "c"}], "image": None},
    ])
    result = load_conversations(p)
    first, second, third = result.conversations
    assert first.images == second.images == third.images == ()
    assert first.messages[0].content == "What does the HTML tag <image> do?"
    assert third.messages[0].content == "a\nb"
    assert result.stats.placeholder_without_images == 1 and result.stats.image_rows == 0
    assert f"1 row(s) have `<image>` in their text but no images; loaded as text, the `<image>` kept as written ({p}:1)" \
        in result.stats.summary()
    assert "images:" not in result.stats.summary()


def test_text_only_load_does_not_import_pil_machinery(tmp_path):
    """The text path never touches sftlab.multimodal (no PIL work per row)."""
    import subprocess
    import sys

    p = write_jsonl(tmp_path / "d.jsonl", [{"messages": user_assistant("hi", "hello")}])
    code = ("import sys; from sftlab.data import load_conversations; load_conversations(%r); "
            "print('sftlab.multimodal.images' in sys.modules)" % str(p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ---- the image helpers -------------------------------------------------------------------------


def test_resolve_image_ref(tmp_path):
    assert resolve_image_ref("a/b.png", tmp_path) == str(tmp_path / "a" / "b.png")
    assert resolve_image_ref("a/../b.png", tmp_path) == str(tmp_path / "b.png")
    assert resolve_image_ref(str(tmp_path / "x.png"), Path("/elsewhere")) == str(tmp_path / "x.png")
    assert resolve_image_ref("file:///data/my%20pics/x.png", tmp_path) == "/data/my pics/x.png"
    for kept in ("data:image/png;base64,AAAA", "https://a.b/c.png", "http://a.b/c.png"):
        assert resolve_image_ref(kept, tmp_path) == kept
    for bad in ("s3://bucket/x.png", "", 3, "file://otherhost/x.png"):
        with pytest.raises(DataError):
            resolve_image_ref(bad, tmp_path)


def test_load_image_is_rgb_and_check_image_explains(tmp_path):
    grey = png(tmp_path / "grey.png", mode="L")
    image = load_image(str(grey))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (128, 128, 128)
    assert load_image(grey.as_uri()).size == (6, 4)
    assert check_image(str(tmp_path / "none.png")).startswith("image file not found")
    assert "data:image/...;base64" in check_image("data:image/png,notbase64")
    assert "not an image file" in check_image("data:image/png;base64," + base64.b64encode(b"hello").decode())
    assert check_image(str(tmp_path)).startswith("image path is not a file")


def test_conversation_record_checks_placeholder_count():
    """The record the loader builds refuses a count mismatch too (a loader bug would not pass silently)."""
    with pytest.raises(ValueError, match="1 image"):
        Conversation.from_messages(user_assistant("no placeholder"), images=("/x.png",))
    conv = Conversation.from_messages(user_assistant(f"{IMAGE_PLACEHOLDER} one"), images=("/x.png",))
    assert conv.images == ("/x.png",)
