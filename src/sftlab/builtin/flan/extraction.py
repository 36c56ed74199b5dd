"""Cluster 'extraction' of the FLAN-style mixture: copy the spans of one kind (an email address, a date,
a price, the hashtags...) out of a short text. Each text holds only the spans asked for (one email
address, one number...), so the answer is unique.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, default_near_misses, family, normalise_response
from sftlab.builtin.tasks import gen_extract_date, gen_extract_email, gen_extract_names, gen_extract_number
from sftlab.builtin.words import CATEGORIES, CITIES, COMMON_WORDS, FIRST_NAMES, PLACES

CLUSTER = "extraction"
# Held out inside the trained cluster: the only family whose answer is several spans (a set), and the
# spans are names, which extract_city teaches to tell apart from other capitalised words.
HELDOUT_FAMILY: str | None = "extract_names"


# Fillers are things that make sense in the sentence ("the cherry cake", not "the teach cake").
_FRUIT = CATEGORIES["fruit"]


# ---------------------------------------------------------------- URLs

_URL_SENTENCES = (
    "Read the full story at {url} before the meeting.",
    "{name} shared a link to {url} in the group chat.",
    "The recipe for the {fruit} cake is at {url} if you want to try it.",
    "For tickets to the {place}, go to {url} and pick a day.",
    "You can download the form from {url} and print it at home.",
    "Our new website {url} went live this morning.",
)


def _url(rng: Random):
    host = rng.choice(COMMON_WORDS) + rng.choice(("", rng.choice(COMMON_WORDS)))
    path = rng.choice(("", "/" + rng.choice(COMMON_WORDS), f"/{rng.choice(COMMON_WORDS)}/{rng.choice(COMMON_WORDS)}"))
    url = f"{rng.choice(('https://', 'http://', 'https://www.'))}{host}.{rng.choice(('com', 'org', 'net', 'io'))}{path}"
    text = rng.choice(_URL_SENTENCES).format(url=url, name=rng.choice(FIRST_NAMES), fruit=rng.choice(_FRUIT),
                                             place=rng.choice(PLACES))
    return {"text": text}, url


# ---------------------------------------------------------------- hashtags

_HASHTAG_POSTS = (
    "Sunny afternoon at the {place} {tags}",
    "{tags} What a day at the {place}!",
    "Just finished a puzzle with {name} {tags}",
    "Can't wait for the weekend at the {place}! {tags}",
    "Made a {fruit} pie today and I love it {tags}",
    "Morning walk to the {place} with {name} {tags}",
)


def _hashtags(rng: Random):
    tags = ["#" + w for w in rng.sample(COMMON_WORDS, rng.randint(1, 3))]
    text = rng.choice(_HASHTAG_POSTS).format(tags=" ".join(tags), place=rng.choice(PLACES),
                                             fruit=rng.choice(_FRUIT), name=rng.choice(FIRST_NAMES))
    return {"text": text}, ", ".join(tags)


# ---------------------------------------------------------------- prices

_CURRENCIES = "$€£"
_GOODS = tuple(w for w in CATEGORIES["furniture"] + CATEGORIES["tool"] + CATEGORIES["instrument"]
               if w != "pliers")  # "a used pliers"
# Articles are fixed words ("a used", "the") so no item needs "an".
_PRICE_SENTENCES = (
    "{name} paid {price} for a used {item} at the {place}.",
    "The {item} in the window is on sale for {price} this week.",
    "I found a second-hand {item} at the market for only {price}!",
    "A new {item} sells for about {price} online.",
    "The shop is asking {price} for that old {item}.",
    "{name} sold the {item} for {price} yesterday.",
)


def _price(rng: Random):
    # Cents never end in 0, so "$12.50" / "$12.5" (same amount, two spellings) cannot arise.
    cents = rng.choice([c for c in range(1, 100) if c % 10])
    price = f"{rng.choice(_CURRENCIES)}{rng.randint(1, 499)}.{cents:02d}"
    item = rng.choice(_GOODS)
    text = rng.choice(_PRICE_SENTENCES).format(price=price, item=item, name=rng.choice(FIRST_NAMES),
                                               place=rng.choice(PLACES))
    return {"text": text, "price": price, "item": item}, price


def _amount_check(response: str, answer: str) -> bool:
    """The amount as written; the currency sign may be left out (it is the unit, not another answer).
    Also grades the inverted template, whose answer is the item (no currency sign)."""
    got, want = normalise_response(response).lower(), answer.lower()
    return got == want or (want[:1] in _CURRENCIES and got == want[1:])


def _amount_misses(answer: str) -> list[str]:
    if answer[:1] not in _CURRENCIES:  # the item, from the inverted template
        return default_near_misses("text", answer)
    sign, amount = answer[0], answer[1:]
    units, cents = amount.split(".")
    other = next(c for c in _CURRENCIES if c != sign)
    return [f"{other}{amount}", f"{sign}{int(units) + 1}.{cents}", f"{sign}{units}",
            f"{sign}{units}.{(int(cents) + 1) % 100:02d}"]


# ---------------------------------------------------------------- times

_TIME_SENTENCES = (
    "The bus to the {place} leaves at {time} every day.",
    "{name} has a dentist appointment at {time} tomorrow.",
    "The {place} closes at {time} on Sundays.",
    "Please be at the station by {time} so we can leave together.",
    "Dinner will be served at {time} in the main hall.",
    "{name} called me at {time} to talk about the trip.",
)


def _time(rng: Random):
    # Hours 10-23 only: "09:05" could fairly be written "9:05", a second answer.
    time = f"{rng.randint(10, 23)}:{rng.randint(0, 59):02d}"
    text = rng.choice(_TIME_SENTENCES).format(time=time, name=rng.choice(FIRST_NAMES), place=rng.choice(PLACES))
    return {"text": text}, time


# ---------------------------------------------------------------- cities

# Each sentence names exactly one person and one city, both capitalised (the inverted template asks
# for the person).
_CITY_SENTENCES = (
    "{name} flew to {city} to visit the {place}.",
    "Last summer {name} lived in {city} for three months.",
    "{name} bought an old map at a small {place} in {city}.",
    "The postcard {name} sent came all the way from {city}.",
    "After the conference in {city}, {name} went straight home.",
    "{name} says the best {place} is in {city}.",
    "My cousin {name} is moving to {city} next year.",
)


def _city(rng: Random):
    city, name = rng.choice(CITIES), rng.choice(FIRST_NAMES)
    text = rng.choice(_CITY_SENTENCES).format(city=city, name=name, place=rng.choice(PLACES))
    return {"text": text, "name": name}, city


FAMILIES: tuple[Family, ...] = (
    family("extract_email", CLUSTER, "Find the email address in a sentence.", gen_extract_email,
           T("Extract the email address from this sentence: {text}"),
           T("What email address is mentioned here? {text}"),
           T("Find the email address in the following text.\nInput: {text}"),
           T("Return only the email address.\n\nInput: {text}", states_format=True),
           T("Which email address appears in \"{text}\"?"),
           T("Q: {text} What is the email address?\nA:"),
           T("{text}\n\nCopy the email address from the sentence above. Reply with the address alone.",
             states_format=True),
           T(("I'm going to paste a message I received.\n\n{text}",
              "I've read the message. What would you like to know about it?",
              "Which email address does it mention?")),
           T("Text: {text}\nEmail:"),
           compare="text"),
    family("extract_number", CLUSTER, "Find the number in a sentence.", gen_extract_number,
           T("Extract the number from this sentence: {text}"),
           T("What number is mentioned here? {text}"),
           T("Find the number in the following text.\nInput: {text}"),
           T("Return only the number that appears in the text.\n\nInput: {text}", states_format=True),
           T("Which number appears in \"{text}\"?"),
           T("Q: {text} What is the number in that sentence?\nA:"),
           T("{text}\n\nThere is one number in the sentence above. Write it in digits and write nothing else.",
             states_format=True),
           T("Sentence: {text}\nNumber:"),
           T("Pull the numeric value out of this sentence: {text}"),
           compare="number"),
    family("extract_date", CLUSTER, "Find the DD/MM/YYYY date in a sentence.", gen_extract_date,
           T("Extract the date from this sentence: {text}"),
           T("What date is mentioned here? {text}"),
           T("Find the date in the following text.\nInput: {text}"),
           T("Return only the date, exactly as written.\n\nInput: {text}", states_format=True),
           T("Which date appears in \"{text}\"?"),
           T("Q: {text} On which date?\nA:"),
           T("{text}\n\nCopy the date from the sentence above in the same DD/MM/YYYY form. Nothing else.",
             states_format=True),
           T("Sentence: {text}\nDate:"),
           T("Pick out the day, month and year mentioned in this sentence: {text}"),
           compare="text"),
    family("extract_names", CLUSTER, "List the people's names in a sentence.", gen_extract_names,
           T("List the names of the people in this sentence: {text}"),
           T("Which people are mentioned here? Give their names separated by commas. {text}",
             states_format=True),
           T("Extract the person names from the following text.\nInput: {text}"),
           T("Return only the names of the people, comma-separated.\n\nInput: {text}", states_format=True),
           T("Who is mentioned in \"{text}\"? List the names."),
           T("Q: {text} Who are the people in that sentence?\nA:"),
           T("{text}\n\nWrite down every person's name from the sentence above, separated by commas, and "
             "nothing else.", states_format=True),
           T("Sentence: {text}\nPeople:"),
           T("Name everyone who appears in this sentence: {text}"),
           compare="set"),
    family("extract_url", CLUSTER, "Find the web address in a sentence.", _url,
           T("Extract the URL from this sentence: {text}"),
           T("What web address is mentioned here? {text}"),
           T("Find the link in the following text.\nInput: {text}"),
           T("Return only the URL, exactly as written.\n\nInput: {text}", states_format=True),
           T("Which website link appears in \"{text}\"?"),
           T("Q: {text} Which address should I open in my browser?\nA:"),
           T("{text}\n\nCopy the link from the sentence above, starting with http, and write nothing else.",
             states_format=True),
           T("Sentence: {text}\nURL:"),
           compare="text"),
    family("extract_hashtags", CLUSTER, "List the hashtags of a social media post.", _hashtags,
           T("Extract the hashtags from this post: {text}"),
           T("Which hashtags does this post use? {text}"),
           T("List every hashtag in the following text, with its # sign, separated by commas.\nInput: {text}",
             states_format=True),
           T("Find the hashtags.\n\nInput: {text}"),
           T("Q: What are the hashtags in \"{text}\"?\nA:"),
           T("{text}\n\nCopy each word starting with # from the post above. Reply with the hashtags only, "
             "comma-separated.", states_format=True),
           T("Post: {text}\nHashtags:"),
           T("Pull out the tags (the words beginning with #) from: {text}"),
           compare="set"),
    family("extract_price", CLUSTER, "Find the price in a sentence.", _price,
           T("Extract the price from this sentence: {text}"),
           T("How much money is mentioned here? {text}"),
           T("Find the amount of money in the following text.\nInput: {text}"),
           T("Return only the price, with its currency sign, exactly as written.\n\nInput: {text}",
             states_format=True),
           T("Q: {text} How much does it cost?\nA:"),
           T("{text}\n\nWhat price is given in the sentence above? Reply with the amount only.",
             states_format=True),
           T("Sentence: {text}\nPrice:"),
           T("What item costs {price} in this sentence? Answer with one word.\n\n{text}", answer="{item}",
             inverted=True, states_format=True),
           T("Which amount is quoted for the {item} in \"{text}\"?"),
           checker=_amount_check, near_misses=_amount_misses),
    family("extract_time", CLUSTER, "Find the time of day (HH:MM) in a sentence.", _time,
           T("Extract the time from this sentence: {text}"),
           T("What time is mentioned here? {text}"),
           T("Find the time of day in the following text.\nInput: {text}"),
           T("Return only the time, in the same HH:MM form.\n\nInput: {text}", states_format=True),
           T("At what time? \"{text}\""),
           T("Q: {text} When is that, according to the sentence?\nA:"),
           T("{text}\n\nCopy the clock time from the sentence above and write nothing else.", states_format=True),
           T(("Can you help me with a note I wrote?\n\n{text}", "Of course. What do you need?",
              "Which time does the note give?")),
           T("Sentence: {text}\nTime:"),
           compare="text"),
    family("extract_city", CLUSTER, "Find the city named in a sentence.", _city,
           T("Which city is mentioned in this sentence? {text}"),
           T("Extract the name of the city from the following text.\nInput: {text}"),
           T("Find the city.\n\nInput: {text}"),
           T("Q: {text} Which city is that about?\nA:"),
           T("{text}\n\nThe sentence above names one person and one city. Reply with the city only.",
             states_format=True),
           T("Sentence: {text}\nCity:"),
           T("What place name (a city) appears in \"{text}\"?"),
           T("Return only the city name, as written.\n\nInput: {text}", states_format=True),
           T("{text}\n\nWho is the person in that sentence? Reply with the name only.", answer="{name}",
             inverted=True, states_format=True),
           compare="text"),
)
