"""Word lists and lookup tables for the built-in task suite (written for sftlab, Apache-2.0).

Kept apart from `tasks.py` so the generators read as logic, not as vocabulary. Every list is
lowercase unless it is a list of names. Tables avoid words with two accepted answers
(e.g. "fish"/"fishes", "learned"/"learnt") so one gold answer is always the only right one.
"""

from __future__ import annotations

# 300 common English words, 3-9 letters, letters only (inputs for reverse / sort / count tasks).
COMMON_WORDS: tuple[str, ...] = tuple(
    """
    apple table river garden window pencil orange mountain bread chair water house friend
    forest candle bottle button letter yellow silver summer winter autumn spring market
    doctor teacher farmer kitchen bridge castle island ocean valley desert planet rocket
    engine wheel basket blanket carpet mirror pocket ticket jacket bucket hammer ladder
    needle pillow rabbit turtle monkey tiger lion horse sheep goat chicken duck eagle
    parrot spider insect flower tree grass stone sand cloud storm thunder rain snow wind
    light shadow morning evening night minute hour week month year money paper story
    picture music dance song voice smile laugh dream idea plan game sport ball team
    player coach school student lesson pencil class library museum theatre cinema
    hotel station airport harbour street road village city country border map compass
    journey holiday travel camera phone radio screen letter number circle square triangle
    corner middle bottom top front back left right north south east west
    green blue purple brown black white pink gray gold copper iron steel glass wood
    cotton wool leather plastic rubber metal butter cheese honey sugar salt pepper
    lemon cherry grape melon peach plum carrot potato tomato onion garlic bean rice
    pasta soup salad cake cookie pie sandwich coffee juice milk breakfast lunch dinner
    happy quick quiet loud bright dark early late small large tall short heavy light
    warm cold soft hard smooth rough clean dirty empty full fresh sweet bitter sour
    simple strong gentle brave clever calm busy lucky proud famous
    open close carry build paint write read listen watch travel climb swim jump walk
    run sing laugh cook clean plant grow learn teach drive ride sail fly
    river lake pond stream hill field meadow farm barn fence gate path trail
    doctor nurse pilot baker painter writer singer driver sailor builder
    brother sister mother father uncle cousin neighbour child family
    """.split()
)
# Deduplicate, keeping the order: the block above repeats a few words (pencil, letter, river...)
# and the generators want each word once so that sampling is uniform.
COMMON_WORDS = tuple(dict.fromkeys(COMMON_WORDS))

FIRST_NAMES: tuple[str, ...] = tuple(
    """
    Maria Tom Anna James Sofia Daniel Laura David Emma Lucas Olivia Noah Grace Samuel
    Chloe Oliver Hannah Peter Julia Henry Alice Oscar Clara Martin Nora Victor Elena
    Hugo Ruth Felix Irene Leo Diana Adam Rosa Simon Helen Paul Vera Ethan
    """.split()
)

EMAIL_DOMAINS: tuple[str, ...] = (
    "example.com", "mail.org", "post.net", "inbox.io", "letters.co", "office.biz",
    "school.edu", "company.com", "studio.net", "garden.org",
)

# Categories for "odd one out"; no word belongs to two categories (no "orange", "lime", "bat").
CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "cherry", "grape", "mango", "peach", "pear", "plum", "melon", "kiwi"),
    "animal": ("tiger", "horse", "rabbit", "monkey", "zebra", "camel", "donkey", "wolf", "bear", "goat"),
    "colour": ("red", "blue", "green", "purple", "yellow", "brown", "pink", "black", "white", "gray"),
    "vehicle": ("car", "bus", "truck", "train", "bicycle", "tractor", "scooter", "taxi", "van", "tram"),
    "instrument": ("piano", "violin", "guitar", "flute", "drum", "trumpet", "cello", "harp", "banjo", "oboe"),
    "body part": ("hand", "elbow", "knee", "shoulder", "ankle", "finger", "chin", "wrist", "ear", "nose"),
    "furniture": ("sofa", "desk", "shelf", "stool", "bench", "wardrobe", "cupboard", "dresser", "armchair", "bed"),
    "tool": ("hammer", "wrench", "saw", "drill", "shovel", "chisel", "pliers", "rake", "axe", "screwdriver"),
}

# Singular -> plural. Regular, -es, -ies, -ves and irregular forms; no noun with two accepted plurals.
PLURALS: dict[str, str] = {
    "cat": "cats", "dog": "dogs", "book": "books", "table": "tables", "river": "rivers",
    "garden": "gardens", "window": "windows", "pencil": "pencils", "house": "houses",
    "friend": "friends", "bottle": "bottles", "ticket": "tickets", "rabbit": "rabbits",
    "flower": "flowers", "cloud": "clouds", "song": "songs", "street": "streets",
    "village": "villages", "camera": "cameras", "carrot": "carrots", "teacher": "teachers",
    "box": "boxes", "bus": "buses", "church": "churches", "dish": "dishes", "fox": "foxes",
    "glass": "glasses", "watch": "watches", "brush": "brushes", "class": "classes",
    "bench": "benches", "kiss": "kisses", "wish": "wishes", "tax": "taxes",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes", "echo": "echoes",
    "city": "cities", "baby": "babies", "story": "stories", "party": "parties",
    "lady": "ladies", "country": "countries", "puppy": "puppies", "berry": "berries",
    "family": "families", "library": "libraries", "key": "keys", "day": "days", "toy": "toys",
    "boy": "boys", "knife": "knives", "leaf": "leaves", "wolf": "wolves", "half": "halves",
    "shelf": "shelves", "life": "lives", "wife": "wives", "loaf": "loaves", "thief": "thieves",
    "calf": "calves", "child": "children", "man": "men", "woman": "women", "person": "people",
    "mouse": "mice", "goose": "geese", "tooth": "teeth", "foot": "feet", "ox": "oxen",
    "sheep": "sheep", "deer": "deer", "aircraft": "aircraft", "louse": "lice",
    "photo": "photos", "piano": "pianos", "radio": "radios", "roof": "roofs", "chief": "chiefs",
}

# Base -> simple past. Regular (-ed, -d, doubled consonant, -ied) and irregular; no verb with two
# accepted past forms (no learn/learnt, dream/dreamt, dive/dove, light/lit).
PAST_TENSE: dict[str, str] = {
    "walk": "walked", "play": "played", "jump": "jumped", "watch": "watched", "open": "opened",
    "listen": "listened", "paint": "painted", "cook": "cooked", "clean": "cleaned",
    "help": "helped", "call": "called", "visit": "visited", "start": "started",
    "dance": "danced", "smile": "smiled", "live": "lived", "move": "moved", "close": "closed",
    "bake": "baked", "share": "shared", "stop": "stopped", "plan": "planned", "drop": "dropped",
    "shop": "shopped", "hug": "hugged", "clap": "clapped", "carry": "carried", "cry": "cried",
    "study": "studied", "try": "tried", "worry": "worried", "hurry": "hurried",
    "go": "went", "eat": "ate", "see": "saw", "run": "ran", "swim": "swam", "sing": "sang",
    "drink": "drank", "write": "wrote", "drive": "drove", "ride": "rode", "speak": "spoke",
    "break": "broke", "choose": "chose", "freeze": "froze", "take": "took", "give": "gave",
    "come": "came", "become": "became", "begin": "began", "know": "knew", "grow": "grew",
    "throw": "threw", "fly": "flew", "draw": "drew", "buy": "bought", "bring": "brought",
    "think": "thought", "teach": "taught", "catch": "caught", "fight": "fought",
    "sell": "sold", "tell": "told", "find": "found", "hold": "held", "stand": "stood",
    "understand": "understood", "sleep": "slept", "keep": "kept", "feel": "felt",
    "leave": "left", "meet": "met", "sit": "sat", "win": "won", "lose": "lost",
    "make": "made", "say": "said", "pay": "paid", "build": "built", "send": "sent",
    "spend": "spent", "put": "put", "cut": "cut", "hit": "hit", "read": "read",
    "wear": "wore", "tear": "tore", "steal": "stole", "forget": "forgot", "hide": "hid",
}

POSITIVE_ADJECTIVES: tuple[str, ...] = (
    "wonderful", "excellent", "great", "fantastic", "delightful", "amazing", "lovely",
    "superb", "brilliant", "enjoyable", "charming", "perfect",
)
NEGATIVE_ADJECTIVES: tuple[str, ...] = (
    "terrible", "awful", "horrible", "boring", "disappointing", "dreadful", "poor", "bad",
    "annoying", "useless", "unpleasant", "miserable",
)
REVIEWED_THINGS: tuple[str, ...] = (
    "movie", "book", "restaurant", "hotel", "phone", "concert", "game", "meal", "laptop",
    "museum", "course", "album", "show", "cafe", "bakery", "tour", "play", "hostel",
)
PLACES: tuple[str, ...] = (
    "market", "library", "park", "station", "museum", "beach", "bakery", "harbour", "cinema",
    "garden", "theatre", "zoo", "river", "castle", "farm",
)

# One-word city names for "which city is mentioned" (flan extraction): capitalised like the people's
# names they share a sentence with, so the task is telling a city from a person; none is also a first
# name (no Sofia, Florence, Paris, Sydney, Milan).
CITIES: tuple[str, ...] = (
    "Lisbon", "Madrid", "Berlin", "Vienna", "Prague", "Dublin", "Oslo", "Stockholm", "Helsinki", "Warsaw",
    "Budapest", "Athens", "Rome", "Naples", "Kyoto", "Amsterdam", "Brussels", "Zurich", "Geneva", "Tokyo",
    "Seoul", "Cairo", "Nairobi", "Lima", "Toronto", "Chicago", "Boston", "Singapore", "Melbourne", "Istanbul",
    "Munich", "Hamburg", "Barcelona", "Edinburgh", "Manchester", "Montreal", "Vancouver", "Copenhagen",
)

# --- added for the FLAN-style mixture (sftlab.builtin.flan: classification, comparison, sequences) ---

# Palindromes for "is it a palindrome?": real words only, so a "yes" never hinges on a made-up string.
PALINDROMES: tuple[str, ...] = (
    "level", "radar", "civic", "kayak", "refer", "rotor", "madam", "noon", "racecar", "stats",
    "tenet", "deed", "peep", "pop", "solos", "sagas", "reviver", "redder", "wow", "mom", "dad",
    "eye", "gag", "nun", "pup", "sees", "toot", "bib", "bob", "did", "ewe", "tot", "pip",
    "rotator", "repaper", "deified",
)

# Groups of mutual anagrams (same letters, different order), everyday words only. A word appears in
# one group only; the anagram generator still decides yes/no from the letters, not from the grouping.
ANAGRAM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("listen", "silent", "enlist", "tinsel"), ("stop", "pots", "tops", "spot", "post"),
    ("evil", "vile", "live", "veil"), ("heart", "earth", "hater"), ("night", "thing"),
    ("below", "elbow", "bowel"), ("state", "taste"), ("dusty", "study"), ("angel", "glean", "angle"),
    ("cat", "act"), ("dog", "god"), ("arc", "car"), ("rat", "tar", "art"), ("meat", "team", "mate", "tame"),
    ("lemon", "melon"), ("peach", "cheap"), ("save", "vase"), ("stressed", "desserts"),
    ("dear", "read", "dare"), ("race", "care", "acre"), ("part", "trap", "rapt"), ("lime", "mile"),
    ("tea", "eat", "ate"), ("bat", "tab"), ("pan", "nap"), ("ten", "net"), ("now", "own", "won"),
    ("east", "seat", "teas", "eats"), ("cider", "cried"), ("inch", "chin"), ("heat", "hate"),
    ("note", "tone"), ("slip", "lips"), ("lump", "plum"), ("wolf", "flow", "fowl"), ("sword", "words"),
    ("secure", "rescue"), ("thorn", "north"), ("march", "charm"), ("baker", "brake", "break"),
    ("skate", "steak", "stake", "takes"), ("finger", "fringe"), ("danger", "garden", "ranged"),
    ("reaction", "creation"), ("votes", "stove"), ("ocean", "canoe"), ("sale", "seal"),
    ("lead", "deal"), ("mane", "name", "mean"), ("pear", "reap", "pare"), ("tired", "tried"),
    ("lion", "loin"), ("shoe", "hose"), ("bored", "robed"), ("smile", "limes", "miles", "slime"),
)

WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July", "August",
                           "September", "October", "November", "December")
