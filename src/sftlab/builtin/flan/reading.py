"""Cluster 'reading' of the FLAN-style mixture: a short context of 2-4 facts, then a question whose
answer needs one fact (whose car, where someone lives), a comparison across facts (oldest, most) or a
small update (items given away, a meeting moved). Held out whole (HELDOUT_CLUSTERS), so no family
here is trained on.

Every context is rendered twice, as running text ({context}) and one fact per line ({facts}), so
templates differ in layout and not only in wording. Answers are a name, a colour, a city, a weekday
or a number; the label-like ones list the other labels of their kind as near-misses.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, family, other_labels
from sftlab.builtin.words import CATEGORIES, CITIES, COUNTABLE_ITEMS, EVENTS, FIRST_NAMES

CLUSTER = "reading"
HELDOUT_FAMILY: str | None = None  # a held-out cluster: every family is unseen

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COLOURS = CATEGORIES["colour"]


def _context(facts: list[str]) -> dict[str, str]:
    return {"context": " ".join(facts), "facts": "\n".join(facts)}


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# ---------------------------------------------------------------- who is oldest

_AGE_FACTS = ("{name} is {age} years old.", "{name} is {age}.", "{name}'s age is {age}.", "{name} just turned {age}.")


def _oldest(rng: Random):
    k = rng.randint(2, 4)
    names = rng.sample(FIRST_NAMES, k)
    ages = rng.sample(range(6, 90), k)
    facts = [rng.choice(_AGE_FACTS).format(name=n, age=a) for n, a in zip(names, ages)]
    oldest, youngest = names[ages.index(max(ages))], names[ages.index(min(ages))]
    return {**_context(facts), "names": _or_list(names), "oldest": oldest, "youngest": youngest}, oldest


# ---------------------------------------------------------------- whose car / which colour

_CAR_FACTS = ("{name} has a {colour} car.", "{name} drives a {colour} car.", "{name}'s car is {colour}.",
              "The {colour} car belongs to {name}.")


def _car_colour(rng: Random):
    k = rng.randint(2, 4)
    names = rng.sample(FIRST_NAMES, k)
    colours = rng.sample(COLOURS, k)
    facts = [rng.choice(_CAR_FACTS).format(name=n, colour=c) for n, c in zip(names, colours)]
    i = rng.randrange(k)
    return {**_context(facts), "person": names[i], "colour": colours[i]}, colours[i]


# ---------------------------------------------------------------- where someone lives

_HOME_FACTS = ("{name} lives in {city}.", "{name}'s home is in {city}.", "{name} has lived in {city} for years.")


def _home_city(rng: Random):
    k = rng.randint(2, 4)
    names = rng.sample(FIRST_NAMES, k)
    cities = rng.sample(CITIES, k + 1)  # the extra one is a former home, never anyone's current one
    i = rng.randrange(k)
    facts = []
    for j, (n, c) in enumerate(zip(names, cities)):
        if j == i and rng.random() < 0.35:
            # A distractor inside the fact: the answer is the current city, not the first one named.
            facts.append(f"{n} used to live in {cities[k]}, but moved to {c} last year.")
        else:
            facts.append(rng.choice(_HOME_FACTS).format(name=n, city=c))
    return {**_context(facts), "person": names[i], "city": cities[i]}, cities[i]


# ---------------------------------------------------------------- how many after giving some away

def _items_left(rng: Random):
    item = rng.choice(COUNTABLE_ITEMS)
    giver, taker = rng.sample(FIRST_NAMES, 2)
    have = {giver: rng.randint(5, 30), taker: rng.randint(2, 20)}
    start = [f"{giver} has {have[giver]} {item}.", f"{taker} has {have[taker]} {item}."]
    rng.shuffle(start)
    k = rng.randint(2, have[giver] - 1)  # from 2: "gives Tom 1 marbles" reads wrong
    give = rng.choice((f"{giver} gives {k} of them to {taker}.", f"{giver} gives {taker} {k} {item}.",
                       f"{taker} gets {k} {item} from {giver}."))
    facts = [*start, give]
    have[giver] -= k
    have[taker] += k
    if rng.random() < 0.4:  # a later change, so the answer is not always one subtraction away
        who = rng.choice((giver, taker))
        j = rng.randint(2, 9)
        facts.append(f"Then {who} finds {j} more {item}.")
        have[who] += j
    asked = rng.choice((giver, taker))
    return {**_context(facts), "item": item, "asked": asked}, str(have[asked])


# ---------------------------------------------------------------- who has the most

_COUNT_FACTS = ("{name} has {n} {item}.", "{name} owns {n} {item}.", "{name} collected {n} {item}.")


def _most_items(rng: Random):
    item = rng.choice(COUNTABLE_ITEMS)
    k = rng.randint(3, 4)
    names = rng.sample(FIRST_NAMES, k)
    counts = rng.sample(range(2, 30), k)
    facts = [rng.choice(_COUNT_FACTS).format(name=n, n=c, item=item) for n, c in zip(names, counts)]
    most, fewest = names[counts.index(max(counts))], names[counts.index(min(counts))]
    return {**_context(facts), "item": item, "names": _or_list(names), "most": most, "fewest": fewest}, most


# ---------------------------------------------------------------- what day is the meeting

_DAY_FACTS = ("The {event} is on {day}.", "The {event} takes place on {day}.", "On {day}, there is the {event}.")


def _meeting_day(rng: Random):
    k = rng.randint(2, 3)
    events = rng.sample(EVENTS, k)
    days = rng.sample(WEEKDAYS, k + 1)  # the extra day is free for a move
    facts = [rng.choice(_DAY_FACTS).format(event=e, day=d) for e, d in zip(events, days)]
    i = rng.randrange(k)
    answer = days[i]
    if rng.random() < 0.35:
        # The first day named for this event is no longer right: the update must win.
        facts.append(f"Later, the {events[i]} was moved to {days[k]}.")
        answer = days[k]
    return {**_context(facts), "event": events[i]}, answer


# ---------------------------------------------------------------- the families

_people = other_labels(FIRST_NAMES)

FAMILIES: tuple[Family, ...] = (
    family("read_oldest", CLUSTER, "Given people's ages, who is the oldest?", _oldest,
           T("{context}\nWho is the oldest?"),
           T("Read the text and answer the question.\n\nText: {context}\nQuestion: Who is the oldest: {names}?"),
           T("Q: {context} Which of them is the oldest?\nA:"),
           T("Facts:\n{facts}\n\nBased on these facts, who is the oldest person? Answer with the name only.",
             states_format=True),
           T("Who is the oldest person mentioned here? {context}"),
           T("{context}\n\nOf {names}, who was born first?"),
           T("Passage: {context}\nQuestion: Who has the highest age?\nAnswer:"),
           T("{context}\nWho is the youngest?", answer="{youngest}", inverted=True),
           T("Facts:\n{facts}\n\nName the youngest person. Give just the name.", answer="{youngest}",
             inverted=True, states_format=True),
           compare="text", near_misses=_people),

    family("read_car_colour", CLUSTER, "Given who drives which car, what colour is someone's car?", _car_colour,
           T("{context}\nWhat colour is {person}'s car?"),
           T("Read the passage and answer.\n\nPassage: {context}\nQuestion: What is the colour of {person}'s car?"),
           T("Q: {context} What colour car does {person} drive?\nA:"),
           T("Facts:\n{facts}\n\nWhich colour is {person}'s car? Answer with one word.", states_format=True),
           T("What colour is {person}'s car, according to this? {context}"),
           T("{context}\n\n{person} cannot find their car in the car park. What colour car should {person} look for?"),
           T("Context: {context}\nQuestion: {person}'s car - what colour is it?\nAnswer:"),
           T("{context}\nWho owns the {colour} car?", answer="{person}", inverted=True),
           T("Facts:\n{facts}\n\nWhose car is {colour}? Reply with a name only.", answer="{person}", inverted=True,
             states_format=True),
           compare="text", near_misses=other_labels(COLOURS, FIRST_NAMES)),

    family("read_home_city", CLUSTER, "Given where people live, where does someone live?", _home_city,
           T("{context}\nWhere does {person} live?"),
           T("Read the text and answer the question.\n\nText: {context}\nQuestion: In which city does {person} "
             "live now?"),
           T("Q: {context} Which city is {person}'s home?\nA:"),
           T("Facts:\n{facts}\n\nWhat city does {person} live in? Answer with the city name only.",
             states_format=True),
           T("Where is {person}'s home, according to this text? {context}"),
           T("{context}\n\nIf you wanted to visit {person} at home, which city would you travel to?"),
           T("Passage: {context}\nQuestion: {person} lives in which city?\nAnswer:"),
           T("{context}\nWho lives in {city}?", answer="{person}", inverted=True),
           T("Facts:\n{facts}\n\nWhich person lives in {city} now? Name only, please.", answer="{person}",
             inverted=True, states_format=True),
           compare="text", near_misses=other_labels(CITIES, FIRST_NAMES)),

    family("read_items_left", CLUSTER, "Someone gives some items away: how many does a person have now?",
           _items_left,
           T("{context}\nHow many {item} does {asked} have now?"),
           T("Read the story and answer the question.\n\nStory: {context}\nQuestion: How many {item} does {asked} "
             "have at the end?"),
           T("Q: {context} Now how many {item} does {asked} own?\nA:"),
           T("Story:\n{facts}\n\nCount {asked}'s {item} after all of this. Reply with a number only.",
             states_format=True),
           T("How many {item} does {asked} end up with? {context}"),
           T("{context}\n\nAt the end, {asked} counts their {item}. What number do they get?"),
           T("Passage: {context}\nQuestion: What is the number of {item} {asked} holds now?\nAnswer:"),
           T("Here is what happened: {context} Give the final number of {item} belonging to {asked}, in digits.",
             states_format=True),
           compare="number"),

    family("read_most_items", CLUSTER, "Given how many items people have, who has the most?", _most_items,
           T("{context}\nWho has the most {item}?"),
           T("Read the text and answer the question.\n\nText: {context}\nQuestion: Which of {names} has the "
             "most {item}?"),
           T("Q: {context} Who has more {item} than anyone else?\nA:"),
           T("Facts:\n{facts}\n\nWho owns the largest number of {item}? Answer with a name only.",
             states_format=True),
           T("Who has the biggest collection of {item}, according to this? {context}"),
           T("Passage: {context}\nQuestion: Who has the most {item}?\nAnswer:"),
           T("{context}\n\nA prize goes to whoever has the most {item}. Who wins it?"),
           T("{context}\nWho has the fewest {item}?", answer="{fewest}", inverted=True),
           T("Facts:\n{facts}\n\nWhich person has the smallest number of {item}? Just the name.",
             answer="{fewest}", inverted=True, states_format=True),
           compare="text", near_misses=_people),

    family("read_meeting_day", CLUSTER, "Given a week's schedule (maybe with a change), what day is an event?",
           _meeting_day,
           T("{context}\nWhat day is the {event}?"),
           T("Read the schedule and answer.\n\nSchedule: {context}\nQuestion: On which day is the {event}?"),
           T("Q: {context} Which day of the week is the {event}?\nA:"),
           T("Notes:\n{facts}\n\nOn what day does the {event} happen? Give only the day of the week.",
             states_format=True),
           T("What day of the week is the {event}? Use this information: {context}"),
           T("{context}\n\nI need to be at the {event}. Which day should I go?"),
           T("Calendar: {context}\nQuestion: The {event} is on which day?\nAnswer:"),
           T("Here are this week's plans: {context} Tell me the day of the {event}, one word.", states_format=True),
           compare="text", near_misses=other_labels(WEEKDAYS)),
)
