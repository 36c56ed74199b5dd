"""The built-in multimodal suite: procedurally drawn shapes, questions code can check (issue 18).

No pretrained vision weights are needed to see that LLaVA-style tuning works: each image is a
small white RGB picture (48x48 px by default) with 1-3 objects, each in its own cell of a 3x3
grid (a cell is size/3 px; at 48 px each cell is exactly one 16x16 patch). An object is a colour
(red, green, blue, yellow, purple, orange) x a shape (circle, square, triangle), drawn without
anti-aliasing so every pixel is one of the seven colours. A `Scene` keeps its objects (colour,
shape, cell) and their normalised boxes, so every caption and every answer is known exactly.

`write_suite` writes the images and four JSONL files (our canonical `Conversation.to_json()` form:
an `<image>` placeholder starts the user turn, "images" holds absolute paths):

  stage1-captions.jsonl  "Describe the image briefly." (several phrasings) -> a caption naming
                         every object in reading order: "A red circle at the top left and a
                         blue square at the bottom."   (stage 1: train the projector only)
                         shapes-stage1-per-image (derived in memory): the first row of each image
                         shapes-stage1-plain (derived in memory): LLaVA's "plain" stage-1 form,
                         one row per train image, `<image>` + its caption as a text document
  stage2-train.jsonl     one question of a SEEN family per conversation, on train images
  stage2-wide-train.jsonl  the same number of questions over the SEEN + TRAIN-ONLY families
  eval.jsonl             SEEN and HELD-OUT families, on eval images (never trained on)
  captions-boxes.jsonl   LLaVA-style records {"id", "image", "captions", "boxes"} for the synth
                         llava pipeline (sftlab.synth.llava.read_records)

Question families (`FAMILIES`), each asked only where its answer is defined and unique:
  SEEN      colour_of_shape     "What colour is the circle?"           (that shape occurs once)
            shape_at_position   "What shape is at the top left?"       (the cell is occupied)
            count_all           "How many shapes are there?"
            position_of_object  "Where is the red square?"             (that object occurs once)
            exists              "Is there a green triangle?"            (yes/no balanced exactly)
  HELD-OUT  colour_at_position  "What colour is the shape at the bottom right?"  (occupied)
            count_shape         "How many circles are there?"          (that shape occurs >= 1)
            shape_of_colour     "What shape is the red object?"        (that colour occurs once)
  TRAIN-ONLY (shapes-stage2-wide only; not evaluated, so eval.jsonl is the same for both sets)
            position_of_colour  "Where is the red object?"             (that colour occurs once)
            position_of_shape   "Where is the circle?"                 (that shape occurs once)
            count_colour        "How many red shapes are there?"       (that colour occurs >= 1)
Each held-out family composes two seen skills (locate + name a colour; recognise a shape +
count; find a colour + name a shape), so a model that learned the seen ones can plausibly answer.
The train-only families add attribute pairings (colour -> position, shape -> position, colour ->
count) so that each held-out family's query attribute and answer kind are trained in other pairings.

Gold answers are terse ("Red.", "Circle.", "2", "Top left.", "Yes."). `check` takes the FIRST
value of the family's answer kind in a response (first colour word, first shape word, first
number as digits or a word, first position phrase -- longest first, so "top left" is not read as
"top" -- or first yes/no) and compares it with the gold value.

Train and eval images never show the same scene: a scene belongs to eval iff a hash of (seed,
scene) falls in the eval fifth of the hash space, so the two sets are disjoint by construction and
neither depends on how many images the other has; within a split every scene is drawn once.
Everything is deterministic given `seed` (each split and family has its own `random.Random`
seeded with a string), and images are named by a hash of their PNG bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from random import Random
from typing import Any

from sftlab.conversation import IMAGE_PLACEHOLDER, Conversation, Message

VERSION = "v1"  # bump when drawing, wording or sampling changes: the cache folder name holds it

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
BACKGROUND = (255, 255, 255)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}

# Cell names in reading order (row-major), per grid size.
POSITION_NAMES: dict[int, tuple[str, ...]] = {
    3: ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"),
    2: ("top left", "top right", "bottom left", "bottom right"),
}
# How a caption or question places a cell: "at the top left", "in the centre", "on the left".
_PREPOSITION = {"centre": "in", "left": "on", "right": "on"}

N_OBJECTS_WEIGHTS = {1: 0.15, 2: 0.35, 3: 0.5}  # single-object scenes are few (only 162 exist at 3x3)
EVAL_SCENE_FRACTION = 0.2  # share of the scene space reserved for eval images


def with_article(label: str) -> str:
    """'red circle' -> 'a red circle'; 'orange square' -> 'an orange square'."""
    return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"


def at_position(position: str) -> str:
    """'top left' -> 'at the top left'; 'centre' -> 'in the centre'; 'left' -> 'on the left'."""
    return f"{_PREPOSITION.get(position, 'at')} the {position}"


# ---------------------------------------------------------------- scenes and drawing

@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    cell: int  # row * grid + column

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]  # in reading order (by cell)
    size: int = 48
    grid: int = 3
    margin: int = 2  # pixels left empty on each side of an object inside its cell

    @property
    def key(self) -> tuple:
        """What the image shows (independent of size): equal keys = identical scenes."""
        return (self.grid, tuple((o.cell, o.colour, o.shape) for o in self.objects))

    def position(self, obj: ShapeObject) -> str:
        return POSITION_NAMES[self.grid][obj.cell]

    def pixel_box(self, obj: ShapeObject) -> tuple[int, int, int, int]:
        """Inclusive pixel corners (x0, y0, x1, y1) of the object's drawn area."""
        row, col = divmod(obj.cell, self.grid)
        x0, x1 = self.size * col // self.grid, self.size * (col + 1) // self.grid - 1
        y0, y1 = self.size * row // self.grid, self.size * (row + 1) // self.grid - 1
        return x0 + self.margin, y0 + self.margin, x1 - self.margin, y1 - self.margin

    def cell_centre(self, cell: int) -> tuple[int, int]:
        row, col = divmod(cell, self.grid)
        return ((2 * col + 1) * self.size // (2 * self.grid), (2 * row + 1) * self.size // (2 * self.grid))

    def box(self, obj: ShapeObject) -> list[float]:
        """Normalised [x0, y0, x1, y1] (exclusive right/bottom edge, 0-1)."""
        x0, y0, x1, y1 = self.pixel_box(obj)
        return [round(x0 / self.size, 4), round(y0 / self.size, 4), round((x1 + 1) / self.size, 4),
                round((y1 + 1) / self.size, 4)]

    def objects_meta(self) -> list[dict[str, Any]]:
        return [{"colour": o.colour, "shape": o.shape, "cell": o.cell, "position": self.position(o),
                 "box": self.box(o)} for o in self.objects]

    def caption(self) -> str:
        """'A red circle at the top left and a blue square at the bottom.' (reading order)."""
        parts = [f"{with_article(o.label)} {at_position(self.position(o))}" for o in self.objects]
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return text[0].upper() + text[1:] + "."

    def render(self):
        """The image (PIL RGB), no anti-aliasing: every pixel is the background or an object colour."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.size, self.size), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for o in self.objects:
            x0, y0, x1, y1 = self.pixel_box(o)
            fill = COLOURS[o.colour]
            if o.shape == "circle":
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif o.shape == "square":
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            else:  # triangle, apex up
                draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
        return img

    def png_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.render().save(buf, format="PNG", optimize=False, compress_level=9)
        return buf.getvalue()


def _check_geometry(size: int, grid: int, margin: int) -> None:
    if grid not in POSITION_NAMES:
        raise ValueError(f"grid must be one of {sorted(POSITION_NAMES)} (the grids whose cells have names), got {grid}")
    cell = size // grid
    if size < grid * 4 or margin < 0 or cell - 2 * margin < 3:
        raise ValueError(f"size {size} px with a {grid}x{grid} grid and margin {margin} px leaves objects of "
                         f"{cell - 2 * margin} px; fix: a larger size or a smaller margin")


def _is_eval_scene(scene: Scene, seed: int) -> bool:
    digest = hashlib.sha1(f"shapes:{seed}:{scene.key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < EVAL_SCENE_FRACTION * 2**32


def draw_scene(rng: Random, *, size: int = 48, grid: int = 3, margin: int | None = None,
               max_objects: int = 3) -> Scene:
    """One random scene: 1..max_objects objects in distinct cells, random colour and shape each."""
    margin = max(1, size // grid // 8) if margin is None else margin
    weights = {n: w for n, w in N_OBJECTS_WEIGHTS.items() if n <= min(max_objects, grid * grid)}
    n = rng.choices(list(weights), weights=list(weights.values()))[0]
    cells = sorted(rng.sample(range(grid * grid), n))
    objects = tuple(ShapeObject(rng.choice(list(COLOURS)), rng.choice(SHAPES), c) for c in cells)
    return Scene(objects, size, grid, margin)


def generate_scenes(n: int, split: str, *, seed: int = 0, size: int = 48, grid: int = 3,
                    margin: int | None = None) -> list[Scene]:
    """`n` pairwise different scenes of `split` ("train" or "eval"); train and eval never share one."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = Random(f"shapes:{seed}:{split}")
    want_eval = split == "eval"
    seen: set = set()
    out: list[Scene] = []
    draws = 0
    while len(out) < n:
        draws += 1
        if draws > 200 * n + 10_000:
            raise ValueError(f"only {len(out)} distinct {split} scenes found in {draws} draws, {n} requested; "
                             "fix: ask for fewer images")
        scene = draw_scene(rng, size=size, grid=grid, margin=margin)
        if scene.key in seen or _is_eval_scene(scene, seed) != want_eval:
            continue
        seen.add(scene.key)
        out.append(scene)
    return out


# ---------------------------------------------------------------- answer extraction and checking

_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}
# Position phrases -> cell name. Tried longest first, so "top left" wins over "top" and "left".
_SEP = r"[\s-]+"
_POSITION_ALIASES: dict[str, str] = {}
for _v, _h, _name in (("top", "left", "top left"), ("top", "right", "top right"),
                      ("bottom", "left", "bottom left"), ("bottom", "right", "bottom right")):
    _vs = ("upper", _v) if _v == "top" else ("lower", _v)
    for _a in _vs:
        _POSITION_ALIASES[f"{_a}{_SEP}{_h}"] = _name
        _POSITION_ALIASES[f"{_h}{_SEP}{_a}"] = _name  # "left top" is rare but unambiguous
for _side in ("top", "bottom", "left", "right"):
    for _mid in ("centre", "center", "middle"):
        _POSITION_ALIASES[f"{_side}{_SEP}{_mid}"] = _side
        _POSITION_ALIASES[f"{_mid}{_SEP}{_side}"] = _side
    _POSITION_ALIASES[_side] = _side
for _mid in ("centre", "center", "middle"):
    _POSITION_ALIASES[_mid] = "centre"

_POSITION_RE = re.compile(r"\b(" + "|".join(sorted(_POSITION_ALIASES, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)
_SHAPE_RE = re.compile(r"\b(circle|square|triangle)s?\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"\b(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_YESNO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_ALIAS_LOOKUP = [(re.compile(rf"^{k}$", re.IGNORECASE), v) for k, v in _POSITION_ALIASES.items()]


def _position_value(match: str) -> str:
    for pattern, name in _ALIAS_LOOKUP:
        if pattern.match(match):
            return name
    raise AssertionError(match)  # every match of _POSITION_RE is an alias


def _number_value(match: str) -> int:
    return int(match) if match.isdigit() else _NUMBER_WORDS[match.lower()]


_EXTRACT: dict[str, Callable[[str], Any]] = {}


def _first(regex: re.Pattern, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def extract(text: str) -> Any:
        m = regex.search(text)
        return convert(m.group(1)) if m else None
    return extract


ANSWER_KINDS = ("colour", "shape", "number", "position", "yesno")
_EXTRACT.update({
    "colour": _first(_COLOUR_RE, str.lower),
    "shape": _first(_SHAPE_RE, str.lower),
    "number": _first(_NUMBER_RE, _number_value),
    "position": _first(_POSITION_RE, _position_value),
    "yesno": _first(_YESNO_RE, str.lower),
})


def extract(kind: str, text: str) -> Any:
    """The first value of answer kind `kind` in `text` ("red", "circle", 2, "top left", "yes"), or None."""
    if kind not in _EXTRACT:
        raise ValueError(f"unknown answer kind {kind!r}; fix: use one of {ANSWER_KINDS}")
    return _EXTRACT[kind](text)


# ---------------------------------------------------------------- question families

Question = tuple[dict[str, str], str]  # (phrasing fields, gold answer)


def _unique_by(scene: Scene, rng: Random, key: Callable[[ShapeObject], str]) -> ShapeObject | None:
    """A random object whose `key` (shape, colour, label) no other object of the scene shares, or None:
    the questions that name an object by one attribute are asked only where that names exactly one."""
    counts = Counter(key(o) for o in scene.objects)
    options = [o for o in scene.objects if counts[key(o)] == 1]
    return rng.choice(options) if options else None


def _ask_colour_of_shape(scene: Scene, rng: Random, i: int) -> Question | None:
    if (o := _unique_by(scene, rng, lambda o: o.shape)) is None:
        return None
    return {"shape": o.shape}, f"{o.colour.capitalize()}."


def _ask_shape_at_position(scene: Scene, rng: Random, i: int) -> Question | None:
    o = rng.choice(scene.objects)
    pos = scene.position(o)
    return {"position": pos, "at_position": at_position(pos)}, f"{o.shape.capitalize()}."


def _ask_count_all(scene: Scene, rng: Random, i: int) -> Question | None:
    return {}, str(len(scene.objects))


def _ask_position_of_object(scene: Scene, rng: Random, i: int) -> Question | None:
    if (o := _unique_by(scene, rng, lambda o: o.label)) is None:
        return None
    pos = scene.position(o)
    return {"object": o.label}, f"{pos[0].upper()}{pos[1:]}."


def _ask_exists(scene: Scene, rng: Random, i: int) -> Question | None:
    """Even-numbered examples of the family ask about a present object (yes), odd ones about an
    absent one (no): exactly balanced. Half the absent ones share a colour or a shape with a present
    object, so "no" cannot be read off one attribute."""
    present = {o.label for o in scene.objects}
    if i % 2 == 0:
        label = rng.choice(sorted(present))
        return {"object": label, "a_object": with_article(label)}, "Yes."
    absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]
    near = [a for a in absent if any(a.split()[0] == o.colour or a.split()[1] == o.shape for o in scene.objects)]
    label = rng.choice(near if near and rng.random() < 0.5 else absent)
    return {"object": label, "a_object": with_article(label)}, "No."


def _ask_position_of_colour(scene: Scene, rng: Random, i: int) -> Question | None:
    if (o := _unique_by(scene, rng, lambda o: o.colour)) is None:
        return None
    pos = scene.position(o)
    return {"colour": o.colour}, f"{pos[0].upper()}{pos[1:]}."


def _ask_position_of_shape(scene: Scene, rng: Random, i: int) -> Question | None:
    if (o := _unique_by(scene, rng, lambda o: o.shape)) is None:
        return None
    pos = scene.position(o)
    return {"shape": o.shape}, f"{pos[0].upper()}{pos[1:]}."


def _ask_count_colour(scene: Scene, rng: Random, i: int) -> Question | None:
    """A colour that is present (1..3); the count is drawn first, as for count_shape."""
    counts = Counter(o.colour for o in scene.objects)
    n = rng.choice(sorted(set(counts.values())))
    colour = rng.choice(sorted(c for c, k in counts.items() if k == n))
    return {"colour": colour}, str(n)


def _ask_colour_at_position(scene: Scene, rng: Random, i: int) -> Question | None:
    o = rng.choice(scene.objects)
    pos = scene.position(o)
    return {"position": pos, "at_position": at_position(pos)}, f"{o.colour.capitalize()}."


def _ask_count_shape(scene: Scene, rng: Random, i: int) -> Question | None:
    """A shape kind that is present (1..3); the count is drawn first, so 2 and 3 are not rare."""
    counts = Counter(o.shape for o in scene.objects)
    n = rng.choice(sorted(set(counts.values())))
    shape = rng.choice(sorted(s for s, c in counts.items() if c == n))
    return {"shape": shape, "shapes": PLURAL[shape]}, str(counts[shape])


def _ask_shape_of_colour(scene: Scene, rng: Random, i: int) -> Question | None:
    if (o := _unique_by(scene, rng, lambda o: o.colour)) is None:
        return None
    return {"colour": o.colour}, f"{o.shape.capitalize()}."


@dataclass(frozen=True)
class ShapeFamily:
    name: str
    split: str  # "seen" (trained in stage 2) or "held-out" (eval only); the evaluator's split names
    answer_kind: str  # one of ANSWER_KINDS: what `check` extracts and compares
    description: str
    phrasings: tuple[str, ...]  # str.format templates over the ask function's fields
    ask: Callable[[Scene, Random, int], Question | None]  # None: the answer is not unique/defined here
    # False: a train-only family of the wider stage-2 set (shapes-stage2-wide), not in eval.jsonl, so
    # the eval set (and the stage-1-only model's scores on it) is the same whichever stage-2 set trains
    evaluated: bool = True

    def question(self, scene: Scene, rng: Random, i: int) -> tuple[str, str, int] | None:
        """(question, gold answer, phrasing index) about `scene`, or None when not askable."""
        got = self.ask(scene, rng, i)
        if got is None:
            return None
        fields, answer = got
        index = rng.randrange(len(self.phrasings))
        return self.phrasings[index].format(**fields), answer, index


_ALL = (
    ShapeFamily("colour_of_shape", "seen", "colour", "The colour of the one object of a shape kind.",
                ("What colour is the {shape}?",
                 "Which colour does the {shape} have?",
                 "Tell me the colour of the {shape}.",
                 "The image has one {shape}. What colour is it?",
                 "Name the colour of the {shape} in the picture.",
                 "What is the colour of the {shape}? Answer with one word.",
                 "Look at the {shape}. Which colour is it painted?"),
                _ask_colour_of_shape),
    ShapeFamily("shape_at_position", "seen", "shape", "The shape in an occupied cell.",
                ("What shape is {at_position}?",
                 "Which shape do you see {at_position}?",
                 "Name the shape in the {position} cell.",
                 "Look at the {position} of the image. What shape is there?",
                 "Is the object {at_position} a circle, a square or a triangle?",
                 "What kind of shape is drawn {at_position}?",
                 "Tell me which shape sits {at_position}."),
                _ask_shape_at_position),
    ShapeFamily("count_all", "seen", "number", "How many objects the image has.",
                ("How many shapes are there?",
                 "Count the shapes in the image.",
                 "How many objects can you see?",
                 "What is the number of shapes in this picture?",
                 "How many coloured shapes does the image contain?",
                 "Count all the objects. Answer with a number.",
                 "Tell me how many shapes are drawn here."),
                _ask_count_all),
    ShapeFamily("position_of_object", "seen", "position", "Where the one object of a colour and shape is.",
                ("Where is the {object}?",
                 "In which part of the image is the {object}?",
                 "Find the {object}. Where is it?",
                 "Tell me the position of the {object}.",
                 "Which part of the grid holds the {object}?",
                 "Where in the picture can you see the {object}?",
                 "Locate the {object} in the image."),
                _ask_position_of_object),
    ShapeFamily("exists", "seen", "yesno", "Whether an object of a colour and shape is present.",
                ("Is there {a_object}?",
                 "Does the image contain {a_object}?",
                 "Can you see {a_object} in the picture? Answer yes or no.",
                 "Is {a_object} drawn anywhere in the image?",
                 "Yes or no: the image shows {a_object}.",
                 "Do you see any {object} here?",
                 "Tell me whether there is {a_object} in this image."),
                _ask_exists),
    ShapeFamily("colour_at_position", "held-out", "colour", "The colour of the object in an occupied cell.",
                ("What colour is the shape {at_position}?",
                 "Which colour is the object {at_position}?",
                 "Tell me the colour of the shape in the {position} cell.",
                 "Look at the {position} of the image. What colour is the shape there?",
                 "Name the colour of whatever is drawn {at_position}.",
                 "What is the colour of the object {at_position}? Answer with one word.",
                 "The {position} cell has a shape in it. Which colour is it?"),
                _ask_colour_at_position),
    ShapeFamily("count_shape", "held-out", "number", "How many objects of one shape kind there are.",
                ("How many {shapes} are there?",
                 "Count the {shapes} in the image.",
                 "How many {shapes} can you see?",
                 "What is the number of {shapes} in this picture?",
                 "Tell me how many {shapes} are drawn here.",
                 "Count only the {shapes}. Answer with a number.",
                 "How many of the shapes are {shapes}?"),
                _ask_count_shape),
    ShapeFamily("shape_of_colour", "held-out", "shape", "The shape of the one object of a colour.",
                ("What shape is the {colour} object?",
                 "Which shape is {colour}?",
                 "Tell me the shape of the {colour} object.",
                 "The image has one {colour} object. What shape is it?",
                 "Is the {colour} object a circle, a square or a triangle?",
                 "Name the shape that is coloured {colour}.",
                 "Look at the {colour} thing in the picture. What shape is it?"),
                _ask_shape_of_colour),
    # train-only families of shapes-stage2-wide: each asks about an attribute pairing no other family has
    # (colour -> position, shape -> position, colour -> count), so that every held-out family's query
    # attribute and answer kind are each trained in two or more pairings, as in FLAN's many-family mixture
    ShapeFamily("position_of_colour", "seen", "position", "Where the one object of a colour is.",
                ("Where is the {colour} object?",
                 "In which part of the image is the {colour} shape?",
                 "Find the {colour} shape. Where is it?",
                 "Tell me the position of the {colour} object.",
                 "Which cell of the grid holds the {colour} shape?",
                 "Where in the picture is the {colour} thing?",
                 "Locate the {colour} object."),
                _ask_position_of_colour, evaluated=False),
    ShapeFamily("position_of_shape", "seen", "position", "Where the one object of a shape kind is.",
                ("Where is the {shape}?",
                 "In which part of the image is the {shape}?",
                 "Find the {shape}. Where is it?",
                 "Tell me the position of the {shape}.",
                 "Which cell of the grid holds the {shape}?",
                 "Where in the picture can you see the {shape}?",
                 "Locate the {shape} in the image."),
                _ask_position_of_shape, evaluated=False),
    ShapeFamily("count_colour", "seen", "number", "How many objects of one colour there are.",
                ("How many {colour} shapes are there?",
                 "Count the {colour} objects in the image.",
                 "How many {colour} things can you see?",
                 "What is the number of {colour} shapes in this picture?",
                 "Tell me how many shapes are {colour}.",
                 "Count only the {colour} shapes. Answer with a number.",
                 "How many of the shapes are {colour}?"),
                _ask_count_colour, evaluated=False),
)

FAMILIES: dict[str, ShapeFamily] = {f.name: f for f in _ALL}
# SEEN: trained in stage 2 and evaluated; WIDE: every trained family (SEEN + the train-only ones)
SEEN_FAMILIES: tuple[str, ...] = tuple(f.name for f in _ALL if f.split == "seen" and f.evaluated)
WIDE_FAMILIES: tuple[str, ...] = tuple(f.name for f in _ALL if f.split == "seen")
HELDOUT_FAMILIES: tuple[str, ...] = tuple(f.name for f in _ALL if f.split == "held-out")
EVAL_FAMILIES: tuple[str, ...] = tuple(f.name for f in _ALL if f.evaluated)

CAPTION_PHRASINGS: tuple[str, ...] = (
    "Describe the image briefly.",
    "Give a short description of this picture.",
    "What is in this image? Answer in one sentence.",
    "Write a brief caption for the image.",
    "Summarise what the picture shows.",
    "Describe what you see, briefly.",
    "Caption this image.",
    "List the objects in the image and where they are.",
)


def check(family: str, answer_text: str, gold: str | Mapping[str, Any]) -> bool:
    """True when the first value of `family`'s answer kind in `answer_text` equals the gold value.

    gold: the gold answer ("Red.", "2", "Top left.") or an example's meta (its "answer").
    Tolerant of case, punctuation and surrounding words; strict on the value ("top" != "top left").
    """
    if family == "caption":
        objects = gold["objects"] if isinstance(gold, Mapping) else None
        if objects is None:
            raise ValueError("checking a caption needs the example's meta (its 'objects'), not just the gold text")
        return check_caption(answer_text, objects)
    if family not in FAMILIES:
        raise ValueError(f"unknown shapes family {family!r}; fix: use one of {sorted(FAMILIES)}")
    kind = FAMILIES[family].answer_kind
    gold_text = str(gold["answer"]) if isinstance(gold, Mapping) else str(gold)
    want = extract(kind, gold_text)
    if want is None:
        raise ValueError(f"gold answer {gold_text!r} holds no {kind} value for family {family!r}")
    return extract(kind, answer_text) == want


def check_caption(text: str, objects: list[Mapping[str, Any]]) -> bool:
    """True when `text` names each object ("<colour> <shape>") once with its position, and nothing else.

    The text is cut at each "<colour> <shape>" mention; the first position phrase after a mention
    (before the next) is that object's position. The multiset of (colour, shape, position) must equal
    the scene's objects.
    """
    mention = re.compile(r"\b(" + "|".join(COLOURS) + r")\s+(circle|square|triangle)s?\b", re.IGNORECASE)
    found = []
    matches = list(mention.finditer(text))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        found.append((m.group(1).lower(), m.group(2).lower(), extract("position", text[m.end():end])))
    want = [(o["colour"], o["shape"], o["position"]) for o in objects]
    return Counter(found) == Counter(want)


def check_answer(conversation_or_meta: Conversation | Mapping[str, Any], response: str) -> bool:
    """Grade a response against a suite example (a Conversation or its meta)."""
    meta = conversation_or_meta.meta if isinstance(conversation_or_meta, Conversation) else conversation_or_meta
    missing = [k for k in ("family", "answer") if k not in meta]
    if missing:
        raise ValueError(f"example meta lacks {missing}; fix: pass a Conversation from the shapes suite")
    return check(str(meta["family"]), response, meta)


# ---------------------------------------------------------------- building the suite

DEFAULTS = {"n_caption": 1200, "n_train_images": 600, "n_stage2": 3000, "n_eval_images": 160,
            "n_eval_per_family": 40, "size": 48, "grid": 3}


def _conversation(question: str, answer: str, image: str, *, source: str, meta: dict[str, Any]) -> Conversation:
    """A one-question conversation. Its id hashes the texts and the image FILE NAME (a hash of the
    PNG), not the absolute path, so ids do not depend on where the suite was written."""
    stable = json.dumps([question, answer, Path(image).name]).encode("utf-8")
    return Conversation(
        messages=(Message("user", f"{IMAGE_PLACEHOLDER}\n{question}"), Message("assistant", answer)),
        source=source, id=hashlib.sha1(stable).hexdigest()[:16], meta=meta, images=(image,),
    )


def _questions(family: str, scenes: list[Scene], paths: list[str], n: int, *, seed: int, set_name: str,
               ) -> list[Conversation]:
    """`n` pairwise different questions of `family`, cycling over the scenes in a seeded order."""
    fam = FAMILIES[family]
    rng = Random(f"shapes:{seed}:{set_name}:{family}")
    out: list[Conversation] = []
    ids: set[str] = set()
    order: list[int] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"shapes family {family!r}: only {len(out)} distinct questions found on {len(scenes)} "
                             f"images, {n} requested; fix: more images or fewer questions")
        if not order:
            order = list(range(len(scenes)))
            rng.shuffle(order)
        j = order.pop()
        scene = scenes[j]
        got = fam.question(scene, rng, len(out))
        if got is None:
            continue
        question, answer, phrasing = got
        meta = {"family": family, "split": fam.split, "answer_kind": fam.answer_kind, "answer": answer,
                "phrasing": phrasing, "set": set_name, "objects": scene.objects_meta()}
        conv = _conversation(question, answer, paths[j], source=f"builtin:shapes-{set_name}:{family}[{len(out)}]",
                             meta=meta)
        if conv.id in ids:
            continue
        ids.add(conv.id)
        out.append(conv)
    return out


def build_suite(folder: str | Path, *, seed: int = 0, n_caption: int = DEFAULTS["n_caption"],
                n_train_images: int = DEFAULTS["n_train_images"], n_stage2: int = DEFAULTS["n_stage2"],
                n_eval_images: int = DEFAULTS["n_eval_images"], n_eval_per_family: int = DEFAULTS["n_eval_per_family"],
                size: int = DEFAULTS["size"], grid: int = DEFAULTS["grid"], margin: int | None = None,
                ) -> tuple[dict[str, bytes], dict[str, list[Conversation]], list[dict[str, Any]]]:
    """Everything write_suite writes, in memory: ({image file name: PNG bytes}, {set: conversations},
    LLaVA records). Image paths in the conversations are absolute, under folder/images/."""
    _check_geometry(size, grid, max(1, size // grid // 8) if margin is None else margin)
    if n_caption > n_train_images * len(CAPTION_PHRASINGS):
        raise ValueError(f"n_caption {n_caption} > {n_train_images} train images x {len(CAPTION_PHRASINGS)} phrasings; "
                         "fix: more train images or fewer captions")
    image_dir = Path(folder).resolve() / "images"
    pngs: dict[str, bytes] = {}

    def place(scenes: list[Scene]) -> list[str]:
        paths = []
        for s in scenes:
            data = s.png_bytes()
            name = hashlib.sha1(data).hexdigest()[:16] + ".png"
            pngs[name] = data
            paths.append(str(image_dir / name))
        return paths

    train = generate_scenes(n_train_images, "train", seed=seed, size=size, grid=grid, margin=margin)
    evals = generate_scenes(n_eval_images, "eval", seed=seed, size=size, grid=grid, margin=margin)
    overlap = {s.key for s in train} & {s.key for s in evals}
    assert not overlap, f"train and eval images share scenes: {sorted(overlap)[:3]}"
    train_paths, eval_paths = place(train), place(evals)
    assert not set(train_paths) & set(eval_paths), "train and eval images share a file"

    # stage 1: image k % n gets its (k // n)-th caption phrasing, in a per-image shuffled order
    rng = Random(f"shapes:{seed}:captions")
    orders = [rng.sample(range(len(CAPTION_PHRASINGS)), len(CAPTION_PHRASINGS)) for _ in train]
    captions = []
    for k in range(n_caption):
        j, rnd = k % len(train), k // len(train)
        phrasing = orders[j][rnd]
        caption = train[j].caption()
        meta = {"family": "caption", "split": "seen", "answer_kind": "caption", "answer": caption,
                "phrasing": phrasing, "set": "stage1", "objects": train[j].objects_meta()}
        captions.append(_conversation(CAPTION_PHRASINGS[phrasing], caption, train_paths[j],
                                      source=f"builtin:shapes-stage1[{k}]", meta=meta))
    rng.shuffle(captions)

    # stage 2: an equal share of every trained family, shuffled together. Both sets draw each family's
    # questions from one stream (set_name "stage2"), so a family's questions in the wide set are a prefix
    # of its questions in the narrow one; the shuffles are seeded per set.
    def stage2_set(families: tuple[str, ...], order: str) -> list[Conversation]:
        out: list[Conversation] = []
        for f_i, family in enumerate(families):
            share = n_stage2 // len(families) + (1 if f_i < n_stage2 % len(families) else 0)
            out += _questions(family, train, train_paths, share, seed=seed, set_name="stage2")
        Random(f"shapes:{seed}:{order}").shuffle(out)
        return out

    stage2 = stage2_set(SEEN_FAMILIES, "stage2-order")
    stage2_wide = stage2_set(WIDE_FAMILIES, "stage2-wide-order")

    evaluation = [c for family in EVAL_FAMILIES
                  for c in _questions(family, evals, eval_paths, n_eval_per_family, seed=seed, set_name="eval")]

    records = [{"id": f"shapes-{seed}-train-{j}", "image": train_paths[j], "captions": [s.caption()],
                "boxes": [{"label": o.label, "box": s.box(o)} for o in s.objects]} for j, s in enumerate(train)]
    return pngs, {"stage1": captions, "stage2": stage2, "stage2-wide": stage2_wide, "eval": evaluation}, records


FILES = {"stage1": "stage1-captions.jsonl", "stage2": "stage2-train.jsonl", "stage2-wide": "stage2-wide-train.jsonl",
         "eval": "eval.jsonl",
         "llava": "captions-boxes.jsonl"}
MANIFEST = "shapes-suite.json"


def _write_atomic(path: Path, data: bytes, ours: set[str], root: Path) -> None:
    """Write `data` to `path` via a temporary name + rename. Unchanged files are left alone; a file
    with other content is replaced only when an earlier write_suite wrote it (listed in the manifest)."""
    if path.exists():
        if path.read_bytes() == data:
            return
        rel = path.relative_to(root).as_posix()
        if rel not in ours:
            raise FileExistsError(f"{path} exists and was not written by write_suite; fix: write the suite to "
                                  "another folder or move that file away")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def write_suite(folder: str | Path, *, seed: int = 0, **sizes: Any) -> dict[str, Path]:
    """Write the suite into `folder` (images/ + JSONL files) and return {"stage1", "stage2", "eval",
    "llava", "images", "manifest": path}. Keyword sizes as `build_suite` (n_caption, n_train_images,
    n_stage2, n_eval_images, n_eval_per_family, size, grid, margin).

    Idempotent (a rerun with the same arguments rewrites nothing) and atomic per file (temporary name,
    then rename); it never deletes files, and replaces only files an earlier write_suite wrote."""
    unknown = set(sizes) - set(DEFAULTS) - {"margin"}
    if unknown:
        raise TypeError(f"write_suite got unknown arguments {sorted(unknown)}; known: {sorted(DEFAULTS)} and margin")
    root = Path(folder).resolve()
    (root / "images").mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST
    previous = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    ours = set(previous.get("written", []))
    pngs, sets, records = build_suite(root, seed=seed, **sizes)
    for name, data in sorted(pngs.items()):
        _write_atomic(root / "images" / name, data, ours, root)
    paths = {"images": root / "images"}
    for key, convs in sets.items():
        paths[key] = root / FILES[key]
        _write_atomic(paths[key], _jsonl([c.to_json() for c in convs]), ours, root)
    paths["llava"] = root / FILES["llava"]
    _write_atomic(paths["llava"], _jsonl(records), ours, root)
    written = ours | {f"images/{n}" for n in pngs} | set(FILES.values())
    settings = {**DEFAULTS, **sizes, "seed": seed, "version": VERSION}
    manifest = {"settings": settings, "counts": {k: len(v) for k, v in sets.items()} | {"images": len(pngs)},
                "written": sorted(written)}
    paths["manifest"] = manifest_path
    _write_atomic(manifest_path, json.dumps(manifest, indent=1).encode("utf-8"), ours | {MANIFEST}, root)
    return paths


# ---------------------------------------------------------------- built-in sets for data configs

SETS = {"shapes-stage1": "stage1", "shapes-stage2": "stage2", "shapes-stage2-wide": "stage2-wide", "shapes-eval": "eval"}
# derived in memory from a stage-2 set: its questions grouped by image into multi-turn conversations
CHAT_SET = "shapes-stage2-chat"


def as_chats(questions: list[Conversation], name: str = CHAT_SET) -> list[Conversation]:
    """One multi-turn conversation per image from single-question ones: the image once, in the first
    user turn, then every question about it in the order given, each followed by its answer.

    Why (measured on the demo): a single question row is ~53 tokens of which ~4 are trained (the
    terse answer + stop token) — the system prompt, the image and the question are paid for every
    answer. With 5 questions per image a row is ~115 tokens for ~20 trained ones, so the same
    compute trains 2.3x as many answer tokens, as LLaVA's own multi-turn instruction data does."""
    by_image: dict[str, list[Conversation]] = {}
    for c in questions:
        by_image.setdefault(c.images[0], []).append(c)
    out = []
    for image, convs in by_image.items():
        msgs = []
        for k, c in enumerate(convs):
            question = c.messages[0].content
            if k:
                question = question.replace(IMAGE_PLACEHOLDER + "\n", "", 1)
            msgs += [Message("user", question), Message("assistant", c.messages[1].content)]
        families = [c.meta["family"] for c in convs]
        meta = {"family": "chat", "split": "seen", "families": families, "set": name.removeprefix("shapes-"),
                "objects": convs[0].meta.get("objects")}
        out.append(Conversation(tuple(msgs), source=f"builtin:{name}[{len(out)}]", meta=meta, images=(image,)))
    return out


# derived in memory from the stage-1 captions: the first caption row of each train image
PER_IMAGE_SET = "shapes-stage1-per-image"


def first_per_image(captions: list[Conversation]) -> list[Conversation]:
    """The first row of each image, in the given order (600 of the 1,200 caption rows: each image's caption
    once, under one of its instruction phrasings).

    Measured as a cheaper demo stage 1 (half the compute; 256 tokens/step, ~183 steps) and not kept: its
    seed-0 caption loss was lower (0.534 over the last 20 steps vs 0.550 for all 1,200 rows at 512 tokens/
    step), but the tuned models were worse over 3 seeds (41.9 / 35.9 / 29.7% on all held-out questions
    against 41.2 / 37.2 / 38.8%; docs/multimodal.md)."""
    seen: set[str] = set()
    out = []
    for c in captions:
        if c.images[0] not in seen:
            seen.add(c.images[0])
            out.append(c)
    return out


# derived in memory from the stage-1 captions: LLaVA's "plain" pretraining format
PLAIN_SET = "shapes-stage1-plain"


def as_plain(captions: list[Conversation]) -> list[Conversation]:
    """LLaVA's stage-1 ("plain") rows from caption conversations: per image (first row of each, in
    order), a text document `<image>` + caption, every caption token and the eos trained, the image
    tokens not (LLaVA-1.5 pretrains its projector on `<image>` + caption + separator, no instruction,
    no system prompt).

    Measured as a cheaper demo stage 1 and not kept: a chat caption row is ~68 tokens with the 9 image
    tokens -- SmolLM2's default system prompt alone is 19 -- for ~17 trained; a plain row is ~28 for the
    same ~17, so 2 epochs over the 600 rows cost ~40% of the chat stage 1. But the tuned model (seed 0)
    scored 30.0% on all held-out questions against 41.2% (docs/multimodal.md). One row per image loses
    no caption: an image's caption is the same under every instruction phrasing."""
    out = []
    for c in first_per_image(captions):
        caption = c.messages[-1].content
        meta = {k: v for k, v in c.meta.items() if k != "phrasing"} | {"set": "stage1-plain"}
        out.append(Conversation.document(IMAGE_PLACEHOLDER + caption, source=f"builtin:{PLAIN_SET}[{len(out)}]",
                                         id=c.id, meta=meta, images=c.images))
    return out


# every set derived in memory from a suite file: name -> (the file's key in FILES, how its rows become the set)
DERIVED_SETS: dict[str, tuple[str, Callable[[list[Conversation]], list[Conversation]]]] = {
    CHAT_SET: ("stage2", partial(as_chats, name=CHAT_SET)),
    "shapes-stage2-wide-chat": ("stage2-wide", partial(as_chats, name="shapes-stage2-wide-chat")),
    PER_IMAGE_SET: ("stage1", first_per_image),
    PLAIN_SET: ("stage1", as_plain),
}


def suite_dir(seed: int = 0, **sizes: Any) -> Path:
    """The cache folder of a suite: cache_dir()/shapes/v1-seed<seed>-<settings hash>."""
    from sftlab.model import cache_dir

    settings = {**DEFAULTS, **sizes}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "shapes" / f"{VERSION}-seed{seed}-{settings['size']}px-{tag}"


def ensure_suite(seed: int = 0, **sizes: Any) -> dict[str, Path]:
    """The suite's paths in the cache, writing it once (a complete suite has its manifest)."""
    folder = suite_dir(seed, **sizes)
    if (folder / MANIFEST).exists() and all((folder / f).exists() for f in FILES.values()):
        paths = {k: folder / f for k, f in FILES.items()}
        return paths | {"images": folder / "images", "manifest": folder / MANIFEST}
    return write_suite(folder, seed=seed, **sizes)


def read_jsonl(path: str | Path) -> list[Conversation]:
    """Conversations from a suite file (our canonical form)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            row = json.loads(line)
            out.append(Conversation.from_messages(row["messages"], id=row["id"], source=row.get("source") or
                                                  f"{path}:{lineno}", meta=row.get("meta", {}),
                                                  images=tuple(row.get("images", ()))))
    return out


def load_set(name: str, seed: int = 0) -> list[Conversation]:
    """A built-in set by name: shapes-stage1 (shapes-stage1-per-image: its first row of each image;
    shapes-stage1-plain: one `<image>` + caption text row per image), shapes-stage2 (the 5 seen families), shapes-stage2-wide (the
    same 3,000 questions spread over the 5 + 3 train-only families), either with -chat (its questions as
    one multi-turn conversation per image), or shapes-eval (written once into the cache)."""
    if name in DERIVED_SETS:
        key, derive = DERIVED_SETS[name]
        return derive(read_jsonl(ensure_suite(seed)[key]))
    if name not in SETS:
        raise ValueError(f"unknown shapes set {name!r}; fix: use one of {sorted([*SETS, *DERIVED_SETS])}")
    return read_jsonl(ensure_suite(seed)[SETS[name]])


def train_eval_sets(seed: int = 0) -> tuple[list[Conversation], list[Conversation], list[Conversation]]:
    """(stage-1 captions, stage-2 seen-family questions, eval questions) of the default suite."""
    paths = ensure_suite(seed)
    return read_jsonl(paths["stage1"]), read_jsonl(paths["stage2"]), read_jsonl(paths["eval"])
