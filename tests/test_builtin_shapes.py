"""The built-in shapes suite (issue 18): determinism, train/eval disjointness, pixels vs metadata,
answers defined and unique, the checkers, the cached builtin:shapes-* sources."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from sftlab.builtin import shapes as S
from sftlab.conversation import IMAGE_PLACEHOLDER

SMALL = {"n_caption": 60, "n_train_images": 40, "n_stage2": 50, "n_eval_images": 30, "n_eval_per_family": 6}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    paths = S.write_suite(folder, seed=3, **SMALL)
    return folder, paths, {k: S.read_jsonl(paths[k]) for k in ("stage1", "stage2", "stage2-wide", "eval")}


def _question(conv) -> str:
    return conv.messages[0].content.removeprefix(IMAGE_PLACEHOLDER + "\n")


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_family_inventory():
    assert set(S.SEEN_FAMILIES) == {"colour_of_shape", "shape_at_position", "count_all", "position_of_object", "exists"}
    assert set(S.HELDOUT_FAMILIES) == {"colour_at_position", "count_shape", "shape_of_colour"}
    assert set(S.WIDE_FAMILIES) - set(S.SEEN_FAMILIES) == {"position_of_colour", "position_of_shape", "count_colour"}
    assert set(S.EVAL_FAMILIES) == set(S.SEEN_FAMILIES) | set(S.HELDOUT_FAMILIES)
    assert not set(S.WIDE_FAMILIES) & set(S.HELDOUT_FAMILIES)
    # every built-in shapes set is a data source, and no other
    from sftlab.data.config import SHAPES_SETS

    assert set(SHAPES_SETS) == set(S.SETS) | set(S.DERIVED_SETS)
    phrasings = [p for f in S.FAMILIES.values() for p in f.phrasings]
    assert len(phrasings) == len(set(phrasings))  # no phrasing shared between families
    for fam in S.FAMILIES.values():
        assert len(fam.phrasings) >= 6, fam.name
        assert fam.answer_kind in S.ANSWER_KINDS and fam.split in ("seen", "held-out")
    assert len(S.CAPTION_PHRASINGS) >= 6


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (S.write_suite(tmp_path / n, seed=s, **SMALL) for n, s in (("a", 1), ("b", 1), ("c", 2)))
    fa, fb, fc = (_file_bytes(tmp_path / n) for n in "abc")
    assert fa.keys() == fb.keys()
    for name, data in fa.items():
        if name.startswith("images/"):
            assert data == fb[name], name
        else:  # the JSONL files hold absolute image paths: equal once the folder is swapped
            assert data.replace(str(tmp_path / "a").encode(), b"@") == fb[name].replace(str(tmp_path / "b").encode(), b"@"), name
    assert {n for n in fa if n.startswith("images/")} != {n for n in fc if n.startswith("images/")}


def test_rewrite_is_idempotent_and_deletes_nothing(tmp_path):
    folder = tmp_path / "suite"
    S.write_suite(folder, seed=0, **SMALL)
    (folder / "images" / "mine.txt").write_text("user file")
    (folder / "notes.md").write_text("keep me")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}
    S.write_suite(folder, seed=0, **SMALL)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}
    assert after == before  # nothing rewritten, nothing removed, no temporary files left
    assert not [p for p in folder.rglob("*.tmp")]
    # a second seed into the same folder adds images and replaces only the suite's own files
    S.write_suite(folder, seed=1, **SMALL)
    assert all(p.exists() for p in before)
    assert (folder / "notes.md").read_text() == "keep me"
    # a file the suite did not write is never overwritten
    other = tmp_path / "other"
    other.mkdir()
    (other / "eval.jsonl").write_text("someone else's data\n")
    with pytest.raises(FileExistsError, match="not written by write_suite"):
        S.write_suite(other, seed=0, **SMALL)
    assert (other / "eval.jsonl").read_text() == "someone else's data\n"


def test_train_and_eval_images_are_disjoint(suite):
    _, _, sets = suite
    train_imgs = {c.images[0] for k in ("stage1", "stage2", "stage2-wide") for c in sets[k]}
    eval_imgs = {c.images[0] for c in sets["eval"]}
    assert train_imgs and eval_imgs and not train_imgs & eval_imgs
    scene = lambda c: tuple((o["cell"], o["colour"], o["shape"]) for o in c.meta["objects"])  # noqa: E731
    assert not {scene(c) for k in ("stage1", "stage2", "stage2-wide") for c in sets[k]} & {scene(c) for c in sets["eval"]}
    train = S.generate_scenes(200, "train", seed=0)
    evals = S.generate_scenes(100, "eval", seed=0)
    assert len({s.key for s in train}) == 200 and len({s.key for s in evals}) == 100
    assert not {s.key for s in train} & {s.key for s in evals}
    # eval scenes do not depend on how many train images there are
    assert S.generate_scenes(50, "eval", seed=0) == evals[:50]


def _check_pixels(path: str, objects: list[dict], size: int, grid: int) -> None:
    img = Image.open(path)
    assert img.mode == "RGB" and img.size == (size, size)
    by_cell = {o["cell"]: o for o in objects}
    cell = size // grid
    for c in range(grid * grid):
        row, col = divmod(c, grid)
        centre = ((2 * col + 1) * size // (2 * grid), (2 * row + 1) * size // (2 * grid))
        corner = (col * cell, row * cell)  # inside the margin: always background
        assert img.getpixel(corner) == S.BACKGROUND, (path, c)
        want = S.COLOURS[by_cell[c]["colour"]] if c in by_cell else S.BACKGROUND
        assert img.getpixel(centre) == want, (path, c, by_cell.get(c))
    # the normalised boxes hold every non-background pixel, and each box holds its object's colour only
    boxes = [[round(v * size) for v in o["box"]] + [S.COLOURS[o["colour"]]] for o in objects]
    colours = set(S.COLOURS.values())
    for y in range(size):
        for x in range(size):
            px = img.getpixel((x, y))
            if px == S.BACKGROUND:
                continue
            assert px in colours, (path, x, y, px)  # no anti-aliased in-between colours
            assert any(x0 <= x < x1 and y0 <= y < y1 and px == rgb for x0, y0, x1, y1, rgb in boxes), (path, x, y)


def test_pixels_match_metadata(suite):
    _, _, sets = suite
    done = set()
    for c in sets["stage1"] + sets["eval"]:
        if c.images[0] not in done:
            done.add(c.images[0])
            _check_pixels(c.images[0], c.meta["objects"], 48, 3)
    assert len(done) >= 50
    # other sizes and a 2x2 grid draw what their metadata says too
    for size, grid in ((60, 3), (64, 2)):
        for scene in S.generate_scenes(15, "train", seed=5, size=size, grid=grid):
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sftlab-shapes-test-{os.getpid()}.png"
            path.write_bytes(scene.png_bytes())
            try:
                _check_pixels(str(path), scene.objects_meta(), size, grid)
            finally:
                path.unlink()
            assert {o["position"] for o in scene.objects_meta()} <= set(S.POSITION_NAMES[grid])


def test_sets_have_the_right_families_and_sizes(suite):
    _, paths, sets = suite
    assert len(sets["stage1"]) == SMALL["n_caption"] and len(sets["stage2"]) == SMALL["n_stage2"]
    assert Counter(c.meta["family"] for c in sets["stage1"]) == {"caption": SMALL["n_caption"]}
    assert set(Counter(c.meta["family"] for c in sets["stage2"]).values()) == {SMALL["n_stage2"] // 5}
    assert {c.meta["family"] for c in sets["stage2"]} == set(S.SEEN_FAMILIES)
    assert Counter(c.meta["family"] for c in sets["eval"]) == {f: SMALL["n_eval_per_family"] for f in S.EVAL_FAMILIES}
    # the wide set: as many questions, an equal share (+-1) of all 8 trained families, and each family's
    # questions a prefix of the same family's in the 5-family set (one question stream per family)
    wide = sets["stage2-wide"]
    assert len(wide) == SMALL["n_stage2"] and {c.meta["family"] for c in wide} == set(S.WIDE_FAMILIES)
    assert set(Counter(c.meta["family"] for c in wide).values()) <= {SMALL["n_stage2"] // 8, SMALL["n_stage2"] // 8 + 1}
    for fam in S.SEEN_FAMILIES:
        narrow_ids = [c.id for c in sorted(sets["stage2"], key=lambda c: c.source) if c.meta["family"] == fam]
        wide_ids = [c.id for c in sorted(wide, key=lambda c: c.source) if c.meta["family"] == fam]
        assert wide_ids == narrow_ids[: len(wide_ids)], fam
    assert {c.meta["split"] for c in sets["eval"] if c.meta["family"] in S.HELDOUT_FAMILIES} == {"held-out"}
    for k, convs in sets.items():
        assert len({c.id for c in convs}) == len(convs), k
        for c in convs:
            assert [m.role for m in c.messages] == ["user", "assistant"]
            assert c.messages[0].content.startswith(IMAGE_PLACEHOLDER + "\n")
            assert len(c.images) == 1 and os.path.isabs(c.images[0]) and os.path.isfile(c.images[0])
            assert c.meta["answer"] == c.messages[1].content
    exists = Counter(c.meta["answer"] for c in sets["stage2"] if c.meta["family"] == "exists")
    assert exists["Yes."] == exists["No."] == SMALL["n_stage2"] // 10
    # the JSONL rows are Conversation.to_json() with absolute image paths
    row = json.loads(paths["stage2"].read_text().splitlines()[0])
    assert set(row) == {"messages", "id", "source", "meta", "images"}


def test_default_sizes_fit_the_spec(tmp_path):
    paths = S.write_suite(tmp_path, seed=0)
    n = {k: sum(1 for _ in open(paths[k])) for k in ("stage1", "stage2", "eval", "llava")}
    assert n == {"stage1": 1200, "stage2": 3000, "eval": 40 * 8, "llava": 600}
    evals = S.read_jsonl(paths["eval"])
    # counts in the held-out count family are not all 1
    assert len({c.meta["answer"] for c in evals if c.meta["family"] == "count_shape"}) == 3


def test_questions_are_asked_only_where_the_answer_is_unique(suite):
    _, _, sets = suite
    for c in sets["stage2"] + sets["stage2-wide"] + sets["eval"]:
        fam, q, gold, objs = c.meta["family"], _question(c), c.meta["answer"], c.meta["objects"]
        colour, shape, pos = S.extract("colour", q), S.extract("shape", q), S.extract("position", q)
        shapes = Counter(o["shape"] for o in objs)
        colours = Counter(o["colour"] for o in objs)
        at = {o["position"]: o for o in objs}
        if fam == "colour_of_shape":
            assert shapes[shape] == 1, q
            assert S.check(fam, next(o["colour"] for o in objs if o["shape"] == shape), gold)
        elif fam == "shape_at_position":
            assert pos in at, q
            assert S.check(fam, at[pos]["shape"], gold)
        elif fam == "count_all":
            assert S.extract("number", gold) == len(objs)
        elif fam == "position_of_object":
            matches = [o for o in objs if (o["colour"], o["shape"]) == (colour, shape)]
            assert len(matches) == 1, q
            assert S.extract("position", gold) == matches[0]["position"]
        elif fam == "exists":
            present = any((o["colour"], o["shape"]) == (colour, shape) for o in objs)
            assert gold == ("Yes." if present else "No."), q
        elif fam == "colour_at_position":
            assert pos in at, q
            assert S.check(fam, at[pos]["colour"], gold)
        elif fam == "count_shape":
            assert shapes[shape] >= 1 and S.extract("number", gold) == shapes[shape], q
        elif fam == "shape_of_colour":
            assert colours[colour] == 1, q
            assert S.check(fam, next(o["shape"] for o in objs if o["colour"] == colour), gold)
        elif fam == "position_of_colour":
            assert colours[colour] == 1, q
            assert S.extract("position", gold) == next(o["position"] for o in objs if o["colour"] == colour)
        elif fam == "position_of_shape":
            assert shapes[shape] == 1, q
            assert S.extract("position", gold) == next(o["position"] for o in objs if o["shape"] == shape)
        elif fam == "count_colour":
            assert colours[colour] >= 1 and S.extract("number", gold) == colours[colour], q
        else:
            pytest.fail(f"unexpected family {fam}")


def test_ask_returns_none_when_not_unique():
    from random import Random

    twin = S.Scene((S.ShapeObject("red", "circle", 0), S.ShapeObject("red", "circle", 4)))
    assert S.FAMILIES["colour_of_shape"].question(twin, Random(0), 0) is None
    assert S.FAMILIES["position_of_object"].question(twin, Random(0), 0) is None
    assert S.FAMILIES["shape_of_colour"].question(twin, Random(0), 0) is None
    assert S.FAMILIES["count_shape"].question(twin, Random(0), 0)[1] == "2"
    assert S.FAMILIES["position_of_colour"].question(twin, Random(0), 0) is None
    assert S.FAMILIES["position_of_shape"].question(twin, Random(0), 0) is None
    assert S.FAMILIES["count_colour"].question(twin, Random(0), 0)[1] == "2"


def test_checker_accepts_gold_and_padding_rejects_near_misses(suite):
    _, _, sets = suite
    others = {"colour": list(S.COLOURS), "shape": list(S.SHAPES)}
    for c in sets["stage2"] + sets["stage2-wide"] + sets["eval"]:
        fam, gold = c.meta["family"], c.meta["answer"]
        kind = S.FAMILIES[fam].answer_kind
        bare = gold.rstrip(".")
        assert S.check(fam, gold, gold) and S.check(fam, gold, c.meta) and S.check_answer(c, gold)
        assert S.check(fam, f"The answer is {bare.lower()}.", gold)
        assert S.check(fam, f"  **{bare.upper()}**!  ", gold)
        if kind in others:
            wrong = next(v for v in others[kind] if v != bare.lower())
            assert not S.check(fam, wrong.capitalize() + ".", gold)
        elif kind == "number":
            assert not S.check(fam, str(int(gold) + 1), gold) and not S.check(fam, str(int(gold) - 1), gold)
            assert S.check(fam, f"There are {['zero', 'one', 'two', 'three'][int(gold)]} of them.", gold)
        elif kind == "yesno":
            assert not S.check(fam, "no" if bare == "Yes" else "Yes, there is.", gold)
        elif kind == "position":
            assert not S.check(fam, "Bottom right." if bare != "Bottom right" else "Top left.", gold)
    # the first candidate counts, and the longest position phrase wins
    assert S.check("position_of_object", "It is in the top-left corner.", "Top left.")
    assert S.check("position_of_object", "upper left", "Top left.")
    assert not S.check("position_of_object", "Top.", "Top left.")
    assert not S.check("position_of_object", "On the left.", "Top left.")
    assert not S.check("position_of_object", "Top left.", "Top.")
    assert S.check("position_of_object", "In the center.", "Centre.")
    assert S.check("position_of_object", "middle of the right side", "Right.") is False  # "middle" comes first
    assert S.check("position_of_object", "middle right", "Right.")
    assert S.check("count_all", "I count 2 shapes.", "2") and not S.check("count_all", "3 shapes, 2 colours", "2")
    assert not S.check("count_all", "22", "2") and not S.check("count_all", "no idea", "2")
    assert S.check("count_shape", "Two circles.", "2")
    assert S.check("exists", "Yes, there is a green triangle.", "Yes.") and not S.check("exists", "No.", "Yes.")
    assert not S.check("exists", "Nothing like that.", "No.")  # "nothing" is not "no"
    assert not S.check("colour_of_shape", "The circle is blue, not red.", "Red.")
    assert not S.check("colour_of_shape", "reddish", "Red.")
    assert S.check("shape_of_colour", "It's a triangle.", "Triangle.") and not S.check("shape_of_colour", "square", "Triangle.")
    with pytest.raises(ValueError, match="unknown shapes family"):
        S.check("nope", "x", "y")


def test_captions_name_every_object(suite):
    _, paths, sets = suite
    for c in sets["stage1"]:
        caption, objs = c.meta["answer"], c.meta["objects"]
        assert caption == c.messages[1].content and caption.endswith(".") and caption[0].isupper()
        for o in objs:
            assert f"{o['colour']} {o['shape']}" in caption
        assert S.check("caption", caption, c.meta)
        assert not S.check("caption", caption.replace(objs[0]["colour"], "purple" if objs[0]["colour"] != "purple" else "red", 1), c.meta)
    assert S.check_caption("A red circle at the top left and a blue square at the bottom.",
                           [{"colour": "red", "shape": "circle", "position": "top left"},
                            {"colour": "blue", "shape": "square", "position": "bottom"}])
    assert not S.check_caption("A red circle at the top and a blue square at the bottom.",
                               [{"colour": "red", "shape": "circle", "position": "top left"},
                                {"colour": "blue", "shape": "square", "position": "bottom"}])
    assert not S.check_caption("A red circle at the top left.",  # an object missing
                               [{"colour": "red", "shape": "circle", "position": "top left"},
                                {"colour": "blue", "shape": "square", "position": "bottom"}])
    assert S.Scene((S.ShapeObject("orange", "square", 4),)).caption() == "An orange square in the centre."
    # the LLaVA records: one a train image, read by the synth llava pipeline
    from sftlab.synth.llava import read_records

    recs = read_records(paths["llava"])
    assert len(recs) == SMALL["n_train_images"]
    assert all(os.path.isfile(r.ref) and r.captions and r.boxes for r in recs)
    assert all(all(0 <= v <= 1 for _, box in r.boxes for v in box) for r in recs)


def test_builtin_sources_load_and_are_cached(tmp_path, monkeypatch):
    from sftlab.data.config import SourceConfig

    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path))
    res = SourceConfig(path="builtin:shapes-stage2").load()
    convs = res.conversations if hasattr(res, "conversations") else res[0]
    assert len(convs) == 3000 and all(c.images and os.path.isfile(c.images[0]) for c in convs)
    assert {c.meta["family"] for c in convs} == set(S.SEEN_FAMILIES)
    folder = S.suite_dir(0)
    assert folder.parent == tmp_path / "shapes" and folder.name.startswith("v1-seed0-48px-")
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    ev = SourceConfig(path="builtin:shapes-eval", limit=10).load()
    ev = ev.conversations if hasattr(ev, "conversations") else ev[0]
    assert len(ev) == 10
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == mtimes  # written once, reused
    stage1, stage2, evaluation = S.train_eval_sets(0)
    assert [c.id for c in stage2] == [c.id for c in convs] and len(stage1) == 1200 and len(evaluation) == 320
    from sftlab.errors import DataError

    with pytest.raises(DataError, match="unknown built-in data set"):
        SourceConfig(path="builtin:shapes-nope").load()


@pytest.mark.parametrize("name", ["shapes-stage2", "shapes-stage2-wide"])
def test_stage2_chat_groups_every_question_of_an_image_into_one_conversation(name):
    """builtin:shapes-stage2[-wide]-chat: the same questions and answers as the single-question set, one
    conversation per image, the image once (first user turn), nothing lost or duplicated."""
    singles = S.load_set(name)
    chats = S.load_set(name + "-chat")
    assert all(c.source.startswith(f"builtin:{name}-chat[") for c in chats)
    assert len(chats) == len({c.images[0] for c in singles}) and sum(len(c.messages) // 2 for c in chats) == len(singles)
    pairs = sorted((c.images[0], c.messages[0].content.replace("<image>\n", ""), c.messages[1].content) for c in singles)
    got = sorted((c.images[0], m.content.replace("<image>\n", ""), a.content)
                 for c in chats for m, a in zip(c.messages[::2], c.messages[1::2]))
    assert got == pairs
    for c in chats:
        assert len(c.images) == 1 and c.messages[0].content.startswith("<image>\n")
        assert sum(m.content.count("<image>") for m in c.messages) == 1
        assert [m.role for m in c.messages] == ["user", "assistant"] * (len(c.messages) // 2)


def test_stage1_plain_is_one_image_and_caption_row_per_train_image():
    """builtin:shapes-stage1-plain: LLaVA's plain stage-1 rows, a text document `<image>` + caption per
    train image of the caption set; every image's caption rows agree, so none is lost."""
    chats = S.load_set("shapes-stage1")
    plain = S.load_set("shapes-stage1-plain")
    by_image: dict[str, set[str]] = {}
    for c in chats:
        by_image.setdefault(c.images[0], set()).add(c.messages[-1].content)
    assert all(len(v) == 1 for v in by_image.values())  # one caption per image, whatever the phrasing
    assert len(plain) == len(by_image) == 600
    for c in plain:
        assert c.kind == "text" and len(c.images) == 1 and c.source.startswith("builtin:shapes-stage1-plain[")
        assert c.messages[0].content == "<image>" + next(iter(by_image[c.images[0]])) == "<image>" + c.meta["answer"]
    assert len({c.images[0] for c in plain}) == len(plain)
    per_image = S.load_set("shapes-stage1-per-image")  # the chat rows the plain ones come from, same order
    assert [c.images for c in per_image] == [c.images for c in plain] and [c.id for c in per_image] == [c.id for c in plain]
    firsts = {}
    for c in chats:
        firsts.setdefault(c.images[0], c)
    assert [c.to_json() for c in per_image] == [c.to_json() for c in firsts.values()]
