"""Cluster 'formatting' of the FLAN-style mixture: the same content re-expressed in a named surface
format (JSON, date and time notations, identifier case styles, a field read out of JSON). The content
never changes, only its shape, so the input and the named format fix the one gold answer.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

import json
import re
from random import Random

from sftlab.builtin.flan.base import Family, T, default_near_misses, family
from sftlab.builtin.tasks import gen_csv_to_json, gen_format_date, gen_uppercase
from sftlab.builtin.words import CATEGORIES, CITIES, FIRST_NAMES

CLUSTER = "formatting"
HELDOUT_FAMILY: str | None = "format_date"

# Spelled out here rather than taken from `calendar`, whose names follow the process locale.
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


def _unlike(answer: str, candidates, *, case_sensitive: bool = False) -> list[str]:
    """The candidates that really differ from `answer` under the family's comparator (a generated
    near-miss can coincide with the gold one, e.g. swapping day and month of 05/05)."""
    same = (lambda m: m == answer) if case_sensitive else (lambda m: m.lower() == answer.lower())
    return list(dict.fromkeys(m for m in candidates if m and not same(m)))


# ---------------------------------------------------------------- dates

def _dmy_iso(rng: Random) -> tuple[str, str]:
    fields, iso = gen_format_date(rng)
    return fields["date"], iso


def _format_date(rng: Random):
    dmy, iso = _dmy_iso(rng)
    return {"date": dmy, "iso": iso}, iso


def _long_date(rng: Random):
    _, iso = _dmy_iso(rng)
    y, m, d = (int(x) for x in iso.split("-"))
    long = f"{MONTHS[m - 1]} {d}, {y}"
    return {"iso": iso, "long": long}, long


def _date_misses(answer: str) -> list[str]:
    """Day and month swapped (the classic DD/MM vs MM/DD slip), the other notation, a zero-padded day."""
    out = default_near_misses("text", answer)
    if m := re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", answer):
        y, mo, d = m.groups()
        out += [f"{y}-{d}-{mo}", f"{d}/{mo}/{y}"]
    elif m := re.fullmatch(r"(\d\d)/(\d\d)/(\d{4})", answer):
        d, mo, y = m.groups()
        out += [f"{mo}/{d}/{y}", f"{y}-{mo}-{d}"]
    elif m := re.fullmatch(r"([A-Z][a-z]+) (\d{1,2}), (\d{4})", answer):
        month, d, y = m.groups()
        other = MONTHS[(MONTHS.index(month) + 1) % 12]
        out += [f"{d} {month} {y}", f"{month} {int(d):02d}, {y}", f"{other} {d}, {y}", f"{month} {d}"]
    return _unlike(answer, out)


# ---------------------------------------------------------------- time

def _time_12h(rng: Random):
    h, mi = rng.randrange(24), rng.randrange(60)
    t24 = f"{h:02d}:{mi:02d}"
    t12 = f"{h % 12 or 12}:{mi:02d} {'AM' if h < 12 else 'PM'}"
    return {"t24": t24, "t12": t12}, t12


def _time_misses(answer: str) -> list[str]:
    """AM and PM exchanged (12:xx is where models slip: noon is PM), or the 24-hour hour 12 off."""
    out = default_near_misses("text", answer)
    if m := re.fullmatch(r"(\d{1,2}):(\d\d) (AM|PM)", answer):
        h, mi, half = m.groups()
        out += [f"{h}:{mi} {'PM' if half == 'AM' else 'AM'}", f"{h}:{mi}"]
    elif m := re.fullmatch(r"(\d\d):(\d\d)", answer):
        h, mi = m.groups()
        out += [f"{(int(h) + 12) % 24:02d}:{mi}"]
    return _unlike(answer, out)


# ---------------------------------------------------------------- case styles

def _phrase_words(rng: Random) -> list[str]:
    # gen_uppercase draws 1-4 words; a one-word phrase has no separator to format, so draw again.
    while True:
        fields, _ = gen_uppercase(rng)
        words = fields["text"].split()
        if len(words) >= 2:
            return words


def _case_fields(rng: Random) -> dict[str, str]:
    words = _phrase_words(rng)
    lower = " ".join(words)
    title = " ".join(w.capitalize() for w in words)
    # The input is sometimes already capitalised, so lower-casing is part of snake/kebab, not a no-op.
    phrase = title if rng.random() < 0.5 else lower
    return {"text": lower, "title": title, "phrase": phrase, "snake": "_".join(words), "kebab": "-".join(words)}


def _snake(rng: Random):
    f = _case_fields(rng)
    return f, f["snake"]


def _title(rng: Random):
    f = _case_fields(rng)
    return f, f["title"]


def _kebab(rng: Random):
    f = _case_fields(rng)
    return f, f["kebab"]


def _case_misses(answer: str) -> list[str]:
    """The same words in the other case styles and separators: each is a different, wrong format."""
    words = re.split(r"[ _-]", answer)
    joined = [sep.join(words) for sep in (" ", "_", "-", "")]
    styles = [s for j in joined for s in (j, j.lower(), j.upper(), j.title(), j.capitalize())]
    return _unlike(answer, default_near_misses("text_cs", answer) + styles, case_sensitive=True)


# ---------------------------------------------------------------- JSON lookup

# Each key draws from its own pool; the pools share no value (names vs cities vs colours vs pets vs
# numbers), and numbers are redrawn on a clash, so "which key holds X?" has one answer.
_JSON_POOLS: dict[str, tuple] = {
    "name": FIRST_NAMES,
    "city": CITIES,
    "colour": CATEGORIES["colour"],
    "fruit": CATEGORIES["fruit"],
    "instrument": CATEGORIES["instrument"],
    "age": tuple(range(18, 91)),
    "score": tuple(range(0, 101)),
    "year": tuple(range(1950, 2031)),
    "floor": tuple(range(1, 40)),
}


def _json_lookup(rng: Random):
    while True:
        keys = rng.sample(sorted(_JSON_POOLS), rng.randint(3, 5))
        obj = {k: rng.choice(_JSON_POOLS[k]) for k in keys}
        if len({str(v) for v in obj.values()}) == len(obj):
            break
    key = rng.choice(keys)
    value = obj[key]
    fields = {"json": json.dumps(obj), "json_pretty": json.dumps(obj, indent=2), "key": key,
              "value": str(value), "value_json": json.dumps(value)}
    return fields, str(value)


def _lookup_misses(answer: str) -> list[str]:
    """Another key, or another value of the same kind: what reading the wrong line of the object gives."""
    out = default_near_misses("text", answer)
    if answer.isdigit():
        out += [str(int(answer) + 1), str(int(answer) - 1)]
    for pool in (tuple(_JSON_POOLS), *_JSON_POOLS.values()):
        if answer in map(str, pool):
            out += [str(v) for v in pool[:6]]
            break
    return _unlike(answer, out)


# ---------------------------------------------------------------- the families

FAMILIES: tuple[Family, ...] = (
    family("csv_to_json", CLUSTER, "Turn a comma-separated list into a JSON array of strings.",
           gen_csv_to_json,
           T("Convert this comma-separated list to a JSON array: {items}"),
           T("Write the following list as a JSON array of strings.\nInput: {items}"),
           T("Format {items} as a JSON list."),
           T("Turn the comma-separated values into JSON.\n\nInput: {items}"),
           T("Give a JSON array containing: {items}"),
           T("Q: What is the JSON array for the list {items}?\nA:"),
           T("{items}\n\nEncode the words above as a JSON list of strings, in the same order. Output only the JSON.",
             states_format=True),
           T("Input: {items}\nOutput format: a JSON array with each word as a double-quoted string.",
             states_format=True),
           T("I have these values separated by commas: {items}. How would they look as a JSON array?"),
           compare="json"),

    family("format_date", CLUSTER, "Rewrite DD/MM/YYYY as YYYY-MM-DD (and back).", _format_date,
           T("Convert the date {date} from DD/MM/YYYY to YYYY-MM-DD.", states_format=True),
           T("Rewrite the following DD/MM/YYYY date in ISO format (YYYY-MM-DD).\nInput: {date}", states_format=True),
           T("Format {date} as YYYY-MM-DD.", states_format=True),
           T("Change this date to year-month-day format.\n\nInput: {date}"),
           T("What is {date} (day/month/year) in ISO 8601 form?"),
           T("Q: The date {date} is written day first. How is it written year first, with dashes?\nA:"),
           T("{date}\n\nThat date is day/month/year. Give it as year-month-day joined by dashes. Output only the date.",
             states_format=True),
           T("The ISO date {iso} is year-month-day. Write it as DD/MM/YYYY.", answer="{date}", inverted=True,
             states_format=True),
           T("Input: {iso}\nRewrite this ISO date in the day/month/year style, with slashes and two-digit day "
             "and month.", answer="{date}", inverted=True, states_format=True),
           compare="text", near_misses=_date_misses),

    family("format_long_date", CLUSTER, "Write an ISO date as 'Month D, YYYY' (and back).", _long_date,
           T("Write the date {iso} as \"Month D, YYYY\".", states_format=True),
           T("Convert this ISO date to a written-out date with the month's name, for example July 4, 1999.\n"
             "Input: {iso}", states_format=True),
           T("Q: How would you write {iso} with the month name first, then the day and the year?\nA:"),
           T("{iso}\n\nSpell out the month of this date and write it as month, day, comma, year. Reply with the "
             "date only.", states_format=True),
           T("Rewrite the date {iso} in the American long form (month name, day, year)."),
           T("Input: {iso}\nOutput: the same date, month written as a word and placed first"),
           T("Give the date {iso} (year-month-day) as month name, day and year."),
           T("Change the numeric date below into text like \"January 9, 2004\".\n\n{iso}", states_format=True),
           T("Write \"{long}\" as an ISO date (YYYY-MM-DD).", answer="{iso}", inverted=True, states_format=True),
           T("Q: What is {long} in year-month-day digits, separated by dashes?\nA:", answer="{iso}", inverted=True),
           compare="text", near_misses=_date_misses),

    family("format_12h_time", CLUSTER, "Convert a 24-hour time to 12-hour time with AM/PM (and back).", _time_12h,
           T("Convert {t24} to 12-hour time."),
           T("Write the 24-hour time {t24} in 12-hour format with AM or PM.", states_format=True),
           T("Q: A train leaves at {t24}. What is that on a 12-hour clock?\nA:"),
           T("{t24}\n\nRewrite this time using the 12-hour clock, like 7:30 PM. Give the time only.",
             states_format=True),
           T("Input: {t24}\nOutput: the time in H:MM AM/PM form", states_format=True),
           T("What time is {t24} in the AM/PM system?"),
           T("The clock shows {t24} (24-hour). How would you write it with AM or PM?"),
           T("Change this 24-hour clock time to 12-hour notation.\n\n{t24}"),
           T("Write {t12} in 24-hour format (HH:MM).", answer="{t24}", inverted=True, states_format=True),
           T("Q: What is {t12} on a 24-hour clock? Use two digits for the hour.\nA:", answer="{t24}",
             inverted=True, states_format=True),
           compare="text", near_misses=_time_misses),

    family("format_snake_case", CLUSTER, "Write a phrase in snake_case (and back).", _snake,
           T("Convert '{phrase}' to snake_case."),
           T("Write the following phrase in snake_case (lower case, words joined by underscores).\nInput: {phrase}",
             states_format=True),
           T("Q: What is the snake_case identifier for \"{phrase}\"?\nA:"),
           T("{phrase}\n\nTurn this into a Python-style variable name: lower-case words joined with underscores. "
             "Reply with the name only.", states_format=True),
           T("Make a snake_case name out of: {phrase}"),
           T("Input: {phrase}\nOutput: the same words in snake case"),
           T("Join the words of \"{phrase}\" with underscores, all in lower case.", states_format=True),
           T("Rewrite {phrase} as a snake_case identifier."),
           T("The identifier {snake} is in snake_case. Write its words as a normal phrase: lower case, separated "
             "by single spaces.", answer="{text}", inverted=True, states_format=True),
           compare="text_cs", near_misses=_case_misses),

    family("format_title_case", CLUSTER, "Write a phrase in Title Case (and back to lower case).", _title,
           T("Convert to Title Case: {text}"),
           T("Capitalise the first letter of every word in '{text}'."),
           T("Write the following phrase in title case.\nInput: {text}"),
           T("Q: How is \"{text}\" written as a title, with each word capitalised?\nA:"),
           T("{text}\n\nRewrite this as a heading where every word starts with a capital letter. Give only the "
             "heading.", states_format=True),
           T("Make each word of this phrase start with an upper-case letter, the other letters lower case.\n\n"
             "Input: {text}", states_format=True),
           T("Title-case the phrase \"{text}\"."),
           T("Input: {text}\nTask: title case\nOutput:"),
           T("'{title}' is in Title Case. Write it entirely in lower case.", answer="{text}", inverted=True,
             states_format=True),
           compare="text_cs", near_misses=_case_misses),

    family("format_kebab_case", CLUSTER, "Write a phrase in kebab-case (or kebab-case in snake_case).", _kebab,
           T("Convert '{phrase}' to kebab-case."),
           T("Write this phrase in kebab case: lower-case words separated by hyphens.\nInput: {phrase}",
             states_format=True),
           T("Q: What URL slug do you get from the title \"{phrase}\" (lower case, hyphens between words)?\nA:",
             states_format=True),
           T("{phrase}\n\nMake a kebab-case name from the words above. Answer with the name only.",
             states_format=True),
           T("Turn {phrase} into kebab-case."),
           T("Input: {phrase}\nOutput (kebab-case):"),
           T("Lower-case every word of \"{phrase}\" and join them with dashes.", states_format=True),
           T("Give the kebab-case form of the phrase below.\n\n{phrase}"),
           T("The name {kebab} is in kebab-case. Rewrite it in snake_case.", answer="{snake}", inverted=True),
           compare="text_cs", near_misses=_case_misses),

    family("json_lookup", CLUSTER, "Read the value of a key from a small JSON object (or the key of a value).",
           _json_lookup,
           T("What is the value of \"{key}\" in this JSON object? {json}"),
           T("Look up the key '{key}' in the following JSON.\nInput: {json}"),
           T("Q: In {json}, what does the key {key} map to?\nA:"),
           T("{json_pretty}\n\nReturn the value stored under \"{key}\". Give the value only, without quotes.",
             states_format=True),
           T("Given the JSON object below, read the field {key}.\n\n{json_pretty}"),
           T("Input: {json}\nField: {key}\nValue:"),
           T("Here is a record: {json}. What is its {key}?"),
           T("Which key in {json} has the value {value_json}? Answer with the key name only.", answer="{key}",
             inverted=True, states_format=True),
           T("{json_pretty}\n\nOne of the fields holds {value_json}. Which field is it?", answer="{key}",
             inverted=True),
           compare="text", near_misses=_lookup_misses),
)
