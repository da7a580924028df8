"""
Synthetic users: the project's offline default benchmark, small enough to train on a CPU in minutes.

Three tasks mirror LaMP-2M (tagging), LaMP-3 (rating) and LaMP-7 (style). Every user of a task has two hidden traits of
three values each (nine user types per task). A user's history items and answers both follow fixed behaviour rules
applied to those traits, so the traits show in the history; the user's `profile_text` describes the habits in a
summariser's words without quoting any answer.

Every pool of wordings (habit descriptions, openers, film plots, review phrases, messages) is a pair
`(train part, held-out part)`. Training users use only the train parts; test users' profiles use only the held-out
phrasings, and so do their inputs unless `held_out_inputs=False`: memorised wording does not help. The splits:

- `train`: train wordings, six of the nine trait combinations of each task.
- `test_random`: held-out wordings, the same six combinations.
- `test_ood`: held-out wordings, the three other combinations (each trait value alone was seen in training; its pairing
  with the other trait was not).

See docs/synthetic.md for the rules, sizes and the measured gap between user-agnostic and trait-aware answers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .tasks import CLASSIFICATION, GENERATION, RATING, ROW_COLUMNS, TASKS, Task, register_task

logger = logging.get_logger(__name__)

TRAIN, HELD_OUT = 0, 1  # index into every (train part, held-out part) pool
SPLITS = ("train", "test_random", "test_ood")

# ---------------------------------------------------------------------------------------------------------------------
# Tagging (LaMP-2M style). Trait 0: how the user tags fast-paced films; trait 1: how they tag light films.
TAGS = (("action", "violence", "thriller"), ("comedy", "romance", "feel-good"))  # [genre][trait value]
TAG_LABELS = TAGS[0] + TAGS[1]
FILM_HEROES = (
    ("A retired cop", "An estranged brother", "A young pilot", "A small-town nurse", "An aging boxer",
     "A shy librarian", "A street magician", "A group of old school friends"),
    ("A former ballet dancer", "A night-shift taxi driver", "A lonely lighthouse keeper", "A widowed farmer"),
)  # fmt: skip
FILM_PLOTS = (  # [genre] -> (train, held-out)
    (("battles hijackers on a speeding train", "races to defuse a bomb in the harbour",
      "fights through a gang-run tower block", "escapes a prison island during a storm",
      "hunts a hitman across a neon city", "leads a heist on an armoured convoy",
      "survives a shootout in a mountain border town", "outruns a cartel in a stolen sports car"),
     ("storms a drug lord's jungle compound", "fends off mercenaries on an oil rig",
      "chases a kidnapper across city rooftops", "duels a rogue agent inside a collapsing dam")),
    (("falls for a rival baker at the village fair", "opens a chaotic cafe with a childhood friend",
      "plans a wedding that keeps going wrong", "swaps homes with a stranger for the summer",
      "coaches a hopeless school choir", "adopts a very stubborn goat",
      "gets stuck on a road trip with a chatty neighbour", "throws a surprise party for a grumpy uncle"),
     ("inherits a seaside guesthouse full of odd guests", "teaches salsa at a retirement home",
      "tries online dating for the first time", "rescues a failing ice-cream van")),
)  # fmt: skip

# Rating (LaMP-3 style). Like tagging, each trait governs one class of input: trait 0 scores a flawed product, trait 1
# a good one. An unseen trait pair then only recombines scores that training users gave to the same kind of review.
RATING_FLAWED = (1, 2, 3)  # rock bottom, docked low, middling
RATING_GOOD = (3, 4, 5)  # reserved, warm, thrilled
PRODUCTS = (
    ("desk lamp", "kettle", "backpack", "pair of headphones", "phone case", "blender", "yoga mat", "water bottle",
     "electric toothbrush", "office chair"),
    ("rice cooker", "umbrella", "bike lock", "keyboard", "travel pillow"),
)  # fmt: skip
REVIEW_PHRASES = (  # [polarity: flawed, good] -> (train, held-out)
    (("broke within a week and support never answered", "arrived damaged and does not work at all",
      "is a complete waste of money", "works but feels cheap and flimsy", "does the job poorly and is annoying to use",
      "is disappointing for the price"),
     ("fell apart the first time I used it", "stopped working at once and the refund took ages",
      "has more flaws than I expected", "mostly works, though I regret buying it")),
    (("works well with only minor quibbles", "is solid and good value", "does its job nicely and I am happy with it",
      "is perfect and I would buy it again", "exceeded every expectation I had", "is excellent in every way"),
     ("is well made apart from one small issue", "is a good buy that I would recommend",
      "is flawless and a joy to use", "is the best purchase I have made all year")),
)  # fmt: skip

# Style (LaMP-7 style). Trait 0: tone (signature words, casing, punctuation); trait 1: length.
MESSAGE_EVENTS = (
    ("the bus was late this morning", "my sister got a new puppy", "the office wifi is down again",
     "I finally finished the big puzzle", "our team won the quiz night", "the bakery on my street closed",
     "I started learning the guitar", "my flight got moved to Friday", "the neighbours are painting their house",
     "I found my old school photos", "the library opens later now", "my phone screen cracked today",
     "we planted tomatoes in the garden", "the concert tickets sold out", "I cooked dinner for ten people",
     "my cousin is visiting next week", "my grandmother turned ninety today", "the cat knocked over my coffee",
     "our landlord fixed the heating", "I signed up for a marathon", "the new cafe finally opened",
     "my bike got a flat tyre", "we booked a trip to the coast", "the power went out last night"),
    ("the train broke down near the station", "my brother passed his driving test",
     "our street flooded after the rain", "I repainted the kitchen yesterday", "the museum reopened after repairs",
     "my laptop refused to start today", "we adopted two kittens", "the gym changed its timetable",
     "my friend moved to another city", "the school play was cancelled", "I lost my keys again",
     "our football match got postponed", "my plants survived the winter", "the parcel arrived two weeks late"),
)  # fmt: skip
MESSAGE_DETAILS = (
    ("so plans have changed", "just thought you should know", "so I will call later", "which was a surprise",
     "so today feels different", "and I keep thinking about it"),
    ("so expect more news soon", "which nobody saw coming", "and I wanted to tell someone", "so that is my news"),
)  # fmt: skip
CHATTY_TAIL = "honestly what a week"

# ---------------------------------------------------------------------------------------------------------------------
# Profile texts: an opener, then the two habits (in random order) joined by a connector. Habit phrases describe the
# behaviour and never quote an answer; each starts with a third-person verb so any connector reads correctly.
OPENERS = {
    "synthetic-tagging": (
        ("Judging by the films they have tagged, this viewer", "This movie fan",
         "From their tagging history, the user"),
        ("Going by the movies they labelled before, this person", "Across their past film labels, the viewer"),
    ),
    "synthetic-rating": (
        ("Across their past reviews, this shopper", "This customer", "Judging by earlier ratings, the reviewer"),
        ("Going by their rating record, this buyer", "Looking over their purchases, this person"),
    ),
    "synthetic-style": (
        ("In their posts, this user", "This writer", "Judging by earlier messages, the person"),
        ("Going by what they have posted before, this author", "Across their past updates, this person"),
    ),
}  # fmt: skip
CONNECTORS = ((", and", "; the same person also"), ("; on top of that, this user",))
HABITS = {  # [task][trait][value] -> (train, held-out)
    "synthetic-tagging": (
        ((("files high-energy films under their plain genre name", "names fast-paced movies by their basic genre",
           "sticks to the plain genre label for energetic movies"),
          ("gives adrenaline-fuelled films just their basic genre name",
           "describes kinetic movies by their plain genre alone")),
         (("tends to label fast-paced films by their violent content",
           "singles out the brutal, violent side of high-energy movies",
           "notices the violent fights and bloodshed in energetic films first"),
          ("marks adrenaline-fuelled films by how violent and bloody they are",
           "points to the brutal, violent scenes in kinetic movies")),
         (("describes fast-paced films by the suspense they build",
           "cares most about the suspense in high-energy movies",
           "tags energetic films by the tension and suspense that keep viewers on edge"),
          ("picks out the nail-biting suspense of adrenaline-fuelled films",
           "labels kinetic movies by the suspense and tension they build"))),
        ((("tags light-hearted films by how funny they are", "focuses on the jokes and laughs in easygoing movies",
           "remembers gentle films for how funny they are"),
          ("judges breezy pictures by how funny and humorous they are",
           "classifies cheerful stories by the jokes and laughs in them")),
         (("files light-hearted films under the love story at their centre",
           "notices the romantic couple first in easygoing movies", "sorts gentle films by their love story"),
          ("classifies breezy pictures by the love story between the couple",
           "labels cheerful stories by their romantic couple")),
         (("labels light-hearted films by the warm mood they leave", "tags easygoing movies by how uplifting they are",
           "describes gentle films by the warm comfort they give"),
          ("judges breezy pictures by how uplifting and warm they feel",
           "classifies cheerful stories by the warm, comforting mood they leave"))),
    ),
    "synthetic-rating": (
        ((("sinks flawed products to rock bottom on the scale",
           "drops faulty products straight to rock bottom",
           "sends any product with flaws to rock bottom"),
          ("puts defective items at rock bottom", "sinks faulty purchases to rock bottom")),
         (("docks flawed products to a low mark, though not all the way down",
           "docks faulty products low on the scale, short of the floor",
           "marks products with flaws low, docking a few stars"),
          ("docks defective items to a low mark, short of the floor",
           "docks faulty purchases a few stars, to a low mark")),
         (("still gives flawed products a middling mark, halfway up the scale",
           "keeps faulty products at a middling score despite their flaws",
           "leaves products with flaws halfway up the scale, middling"),
          ("scores defective items middling, halfway up", "keeps faulty purchases at a middling, halfway mark"))),
        ((("stays reserved about good products, with restrained praise",
           "holds praise in reserve even for products that work well",
           "keeps a reserved, restrained view of products they like"),
          ("stays reserved and restrained about items that please them",
           "praises good purchases with restraint, in a reserved way")),
         (("warmly rewards good products with a solid, high mark",
           "is warm toward products that work well, rating them solidly high",
           "rates products they like warmly and solidly, high but measured"),
          ("rewards items that please them with a warm, solid, high mark",
           "gives good purchases a warm, solid, high mark")),
         (("is thrilled by good products and gives them full marks",
           "rates products that work well with full marks, thrilled",
           "awards full marks to any product that thrills them"),
          ("gives items that please them full marks, thrilled",
           "is thrilled with good purchases and awards full marks"))),
    ),
    "synthetic-style": (
        ((("writes with loud enthusiasm, opening with a gasp of surprise",
           "sounds thrilled about everything and piles up exclamation marks",
           "shares news with breathless, thrilled excitement"),
          ("brings over-the-top excitement and exclamation marks to every update",
           "greets each bit of news with thrilled gasps and exclamations")),
         (("writes flatly in lower case with no final punctuation", "sounds dry and matter-of-fact, like a quick memo",
           "keeps a flat, informational tone without capital letters"),
          ("types in an unbothered, flat, all-lowercase way", "posts dry, flat notices in lower case")),
         (("signs off affectionately with a smiley", "writes kindly and ends posts with a hug",
           "keeps an affectionate tone with a cheerful face at the end"),
          ("closes messages affectionately with warmth and a little smile",
           "sounds caring and ends with an affectionate goodbye"))),
        ((("writes extremely short posts: the bare fact and nothing else", "writes very short updates with no detail",
           "cuts every message down to the bare main event"),
          ("keeps updates extremely short, just the bare fact", "shares only the bare headline, very short")),
         (("writes medium-length posts: the news plus one brief detail",
           "writes ordinary, medium-length posts with the point and one reason",
           "tells what happened plus one short detail, at medium length"),
          ("gives the news plus one brief detail, medium length",
           "writes medium-length posts with the news and one brief reason")),
         (("writes long, rambling posts that wander on about their week",
           "tends to ramble on at length about the week after the point is made",
           "writes long posts with a rambling aside about the week at the end"),
          ("rambles on at length, adding a musing about their week",
           "makes posts long by rambling on about how the week went"))),
    ),
}  # fmt: skip

# ---------------------------------------------------------------------------------------------------------------------
TAGGING_TASK = register_task(Task(
    "synthetic-tagging", CLASSIFICATION, "Pick the tag this user would give the film described below.",
    f"Answer with exactly one tag from: {', '.join(TAG_LABELS)}.",
    "tagging short film descriptions with one tag from a small list", TAG_LABELS,
))  # fmt: skip
RATING_TASK = register_task(Task(
    "synthetic-rating", RATING, "Guess how many stars this user gave alongside the short review below.",
    # the digits mean nothing to an untrained 135M model; naming what 1, 3 and 5 stand for lets it tie them to a tone
    "Answer with one digit: 1 means terrible, 3 means okay, 5 means excellent.",
    "rating products from 1 to 5 stars next to a short written review",
    ("1", "2", "3", "4", "5"),
))  # fmt: skip
STYLE_TASK = register_task(Task(
    "synthetic-style", GENERATION, "Rewrite the plain message below the way this user writes their posts.",
    "Answer with the rewritten message only.", "rewriting short everyday updates in one's own voice",
))  # fmt: skip
SYNTHETIC_TASKS = (TAGGING_TASK.name, RATING_TASK.name, STYLE_TASK.name)
SCORES = dict(zip(SYNTHETIC_TASKS, ("accuracy", "mae", "rouge-l")))  # how `oracle_gap` scores each task
_SHORT = dict(zip(SYNTHETIC_TASKS, ("tag", "rate", "style")))
# The LaMP task each mirrors, and its item keys (input key, output key); a LaMP-7 item is only a text.
LAMP_CODES = dict(zip(SYNTHETIC_TASKS, ("2M", "3", "7")))
LAMP_ITEM_KEYS = dict(zip(SYNTHETIC_TASKS, (("description", "tag"), ("text", "score"), (None, "text"))))

# The nine trait combinations of a task; the three with (a + b) % 3 == 0 are kept out of training. Each trait value is
# in exactly one of them, so every single value is still seen in training: only the pairing is new.
TRAIT_COMBOS = tuple(itertools.product(range(3), range(3)))
OOD_COMBOS = tuple(c for c in TRAIT_COMBOS if sum(c) % 3 == 0)
SEEN_COMBOS = tuple(c for c in TRAIT_COMBOS if c not in OOD_COMBOS)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _input_classes(task: str, part: int) -> list[dict[str, Any]]:
    """A task's inputs from one pool part: one `{text: hidden key}` per input class (genre, polarity, or one)."""
    if task == TAGGING_TASK.name:
        return [{f"{who} {plot}.": genre for who in FILM_HEROES[part] for plot in plots[part]}
                for genre, plots in enumerate(FILM_PLOTS)]  # fmt: skip
    if task == RATING_TASK.name:
        return [{f"The {item} {phrase}.": polarity for item in PRODUCTS[part] for phrase in phrases[part]}
                for polarity, phrases in enumerate(REVIEW_PHRASES)]  # fmt: skip
    return [{f"{_cap(e)}, {d}.": (e, d) for e in MESSAGE_EVENTS[part] for d in MESSAGE_DETAILS[part]}]


# INPUT_POOLS[task][part][class] -> input texts; _INPUT_KEYS[task][text] -> genre, review polarity or (event, detail)
INPUT_POOLS: dict[str, tuple[list[list[str]], ...]] = {}
_INPUT_KEYS: dict[str, dict[str, Any]] = {}
for _task in SYNTHETIC_TASKS:
    _classes = [_input_classes(_task, part) for part in (TRAIN, HELD_OUT)]
    INPUT_POOLS[_task] = tuple([list(lookup) for lookup in part] for part in _classes)
    _INPUT_KEYS[_task] = {text: key for part in _classes for lookup in part for text, key in lookup.items()}


def answer_for(task: str, traits: tuple[int, int], text: str) -> str:
    """
    The answer a user with these traits gives to one synthetic input: the task's behaviour rule.

    Args:
        task (`str`): one of `SYNTHETIC_TASKS`.
        traits (`tuple[int, int]`): the user's two trait values, each 0, 1 or 2.
        text (`str`): an input of that task's pools (a film description, a review or a plain message).

    Returns:
        `str`: the tag, the rating digit or the rewritten message.

    Example:

    ```python
    >>> from hyperpeft.data.synthetic import answer_for
    >>> answer_for("synthetic-rating", (0, 2), "The kettle is perfect and I would buy it again.")  # (1, 5) user
    '5'
    ```
    """
    if task not in _INPUT_KEYS:
        raise ValueError(f"`task` should be one of {SYNTHETIC_TASKS} but is {task!r}.")
    if text not in _INPUT_KEYS[task]:
        raise ValueError(f"{text!r} is not an input of the {task} pools; only generated inputs have known answers.")
    key = _INPUT_KEYS[task][text]
    if task == TAGGING_TASK.name:
        return TAGS[key][traits[key]]
    if task == RATING_TASK.name:
        return str(RATING_GOOD[traits[1]] if key else RATING_FLAWED[traits[0]])  # key: 0 flawed, 1 good
    (event, detail), (tone, length) = key, traits
    body = (event, f"{event}, {detail}", f"{event}, {detail}, {CHATTY_TAIL}")[length]
    return (f"OMG guess what, {body}!!", f"fyi {body.lower()} i guess", f"{_cap(body)} :) take care")[tone]


def _groups(task: str, texts: list[str]) -> dict[Any, list[str]]:
    """Inputs grouped so that a user gets at most one per group: one event per user in the style task (a terse user's
    rewrites of one event would be identical), else one per text."""
    groups: dict[Any, list[str]] = {}
    for text in texts:
        groups.setdefault(_INPUT_KEYS[task][text][0] if task == STYLE_TASK.name else text, []).append(text)
    return groups


def _profile_text(task: str, traits: tuple[int, int], part: int, rng: random.Random) -> str:
    habits = [rng.choice(HABITS[task][trait][value][part]) for trait, value in enumerate(traits)]
    rng.shuffle(habits)
    return f"{rng.choice(OPENERS[task][part])} {habits[0]}{rng.choice(CONNECTORS[part])} {habits[1]}."


@dataclass
class SyntheticConfig:
    """
    Sizes and seed of a synthetic benchmark. The defaults (180 / 36 / 36 users per task, 10 history items, 3 queries)
    give 540 training rows and 108 rows per test split for each task: 2,268 rows in all.
    """

    train_users: int = field(default=180, metadata={"help": "Training users per task."})
    test_random_users: int = field(default=36, metadata={"help": "Test users per task, trait pairs seen in training."})
    test_ood_users: int = field(default=36, metadata={"help": "Test users per task, trait pairs never trained on."})
    history_items: int = field(default=10, metadata={"help": "History items per user, input classes in turn."})
    queries: int = field(default=3, metadata={"help": "Query rows per user."})
    seed: int = field(default=0, metadata={"help": "Seeds every draw: the same seed gives the same data."})
    tasks: tuple[str, ...] = field(default=SYNTHETIC_TASKS, metadata={"help": "Which synthetic tasks to generate."})
    held_out_inputs: bool = field(
        default=True, metadata={"help": "Test users draw inputs from the held-out pools (else from the train pools)."}
    )

    def __post_init__(self):
        for name in ("train_users", "test_random_users", "test_ood_users", "history_items", "queries", "seed"):
            value, least = getattr(self, name), 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` should be an int >= {least} but the value passed is {value!r}.")
        self.tasks = tuple(self.tasks) if isinstance(self.tasks, list) else self.tasks
        if not isinstance(self.tasks, tuple) or not self.tasks or any(t not in SYNTHETIC_TASKS for t in self.tasks):
            raise ValueError(f"`tasks` should be a non-empty subset of {SYNTHETIC_TASKS} but is {self.tasks!r}.")
        for task in self.tasks:  # a user's inputs are distinct: the smallest pool class must hold enough
            n_classes = len(INPUT_POOLS[task][TRAIN])
            need = -(-self.history_items // n_classes) + -(-self.queries // n_classes)
            have = min(len(_groups(task, texts)) for part in INPUT_POOLS[task] for texts in part)
            if need > have:
                raise ValueError(
                    f"`history_items` = {self.history_items} and `queries` = {self.queries} need {need} distinct "
                    f"{task} inputs per class, but its smallest pool has {have}; ask for fewer."
                )

    def users(self, split: str) -> int:
        """The number of users per task in `split`."""
        return getattr(self, "train_users" if split == "train" else f"{split}_users")


def _user_rows(config: SyntheticConfig, task: str, user_id: str, traits, parts: tuple[int, int], rng) -> list[dict]:
    """One user's query rows; `parts` = (pool part of the inputs, pool part of the profile phrasings)."""
    pools = INPUT_POOLS[task][parts[0]]
    history_classes = [i % len(pools) for i in range(config.history_items)]  # classes in turn: every habit shows
    start = rng.randrange(len(pools))
    query_classes = [(start + k) % len(pools) for k in range(config.queries)]
    picks = {}
    for c, texts in enumerate(pools):
        groups = _groups(task, texts)
        picks[c] = [
            rng.choice(groups[g]) for g in rng.sample(list(groups), history_classes.count(c) + query_classes.count(c))
        ]
    history = []
    for c in history_classes:
        text = picks[c].pop()
        history.append({"input": "" if task == STYLE_TASK.name else text, "output": answer_for(task, traits, text)})
    rng.shuffle(history)
    profile_text = _profile_text(task, traits, parts[1], rng)
    rows = []
    for k, c in enumerate(query_classes):
        text = picks[c].pop()
        rows.append({
            "id": f"{user_id}-q{k}", "user_id": user_id, "task": task, "metric": TASKS[task].metric, "input": text,
            "output": answer_for(task, traits, text), "history": [dict(item) for item in history],
            "profile_text": profile_text,
        })  # fmt: skip
    return rows


def generate_rows(config: SyntheticConfig | None = None) -> dict[str, list[dict]]:
    """
    Generate the three splits as rows of the common schema (`hyperpeft.data.ROW_COLUMNS`).

    User ids are per task (`"{split}-{tag|rate|style}-{i:03d}"`), as in LaMP where each task has its own users, so a
    user id has one profile text. Each split and task draws from its own seeded stream, so changing a test size or the
    task list leaves the other users as they were.

    Args:
        config (`SyntheticConfig`, *optional*): sizes and seed; the defaults when omitted.

    Returns:
        `dict[str, list[dict]]`: `"train"`, `"test_random"`, `"test_ood"` -> rows, grouped by task, then user.

    Example:

    ```python
    >>> from hyperpeft.data.synthetic import SyntheticConfig, generate_rows
    >>> rows = generate_rows(SyntheticConfig(train_users=6, test_random_users=3, test_ood_users=3, queries=1))
    >>> {split: len(r) for split, r in rows.items()}
    {'train': 18, 'test_random': 9, 'test_ood': 9}
    ```
    """
    config = SyntheticConfig() if config is None else config
    if not isinstance(config, SyntheticConfig):
        raise TypeError(f"`config` should be a SyntheticConfig but is {type(config).__name__}.")
    splits = {}
    for split in SPLITS:
        phrases = TRAIN if split == "train" else HELD_OUT
        parts = (phrases if config.held_out_inputs else TRAIN, phrases)
        n, rows = config.users(split), []
        combos = OOD_COMBOS if split == "test_ood" else SEEN_COMBOS
        for task in config.tasks:
            # One stream per split and task (str seeds are stable everywhere): resizing a split or dropping a task
            # leaves the other users as they are.
            rng = random.Random(f"hyperpeft-synthetic/{config.seed}/{split}/{task}")
            order = rng.sample(combos, len(combos))
            assigned = (order * -(-n // len(order)))[:n]  # every combination equally often, give or take one
            rng.shuffle(assigned)
            for i, traits in enumerate(assigned):
                rows += _user_rows(config, task, f"{split}-{_SHORT[task]}-{i:03d}", traits, parts, rng)
        splits[split] = rows
    logger.info("Generated synthetic users: " + ", ".join(f"{s} {len(r)} rows" for s, r in splits.items()))
    return splits


def generate_dataset(config: SyntheticConfig | None = None):
    """
    The splits of [`generate_rows`] as a `datasets.DatasetDict` with the loaders' `ROW_FEATURES`, so they concatenate
    with loaded data (needs the `datasets` package).

    Args:
        config (`SyntheticConfig`, *optional*): sizes and seed; the defaults when omitted.

    Returns:
        `datasets.DatasetDict`: `"train"`, `"test_random"`, `"test_ood"`, each with the columns of `ROW_COLUMNS`.
    """
    from datasets import Dataset, DatasetDict

    from .schema import ROW_FEATURES

    rows = generate_rows(config)
    return DatasetDict(
        {split: Dataset.from_list(split_rows, features=ROW_FEATURES) for split, split_rows in rows.items()}
    )


def _check_rows(rows_by_split: Any) -> None:
    if not isinstance(rows_by_split, Mapping):
        raise TypeError(
            f"`rows_or_config` should be a SyntheticConfig or a mapping split -> rows, not {rows_by_split!r}."
        )
    for split, rows in rows_by_split.items():
        if split not in SPLITS or isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise ValueError(
                f"Expected splits {SPLITS} mapped to lists of rows, got {split!r}: {type(rows).__name__}."
            )
        for i, row in enumerate(rows):
            where = f"Row {i} of split {split!r}"
            missing = [c for c in ROW_COLUMNS if not isinstance(row, Mapping) or c not in row]
            if missing:
                raise ValueError(f"{where} lacks the columns {missing}; every row needs {ROW_COLUMNS}.")
            if row["task"] not in SYNTHETIC_TASKS:
                raise ValueError(f"{where} has task {row['task']!r}; expected one of {SYNTHETIC_TASKS}.")
            if not isinstance(row["history"], list) or not all(
                isinstance(item, Mapping)
                and isinstance(item.get("input"), str)
                and isinstance(item.get("output"), str)
                for item in row["history"]
            ):
                raise ValueError(f"{where}: `history` should be a list of {{'input': str, 'output': str}} items.")
            if row["task"] == STYLE_TASK.name and any(item["input"] for item in row["history"]):
                raise ValueError(f"{where}: a LaMP-7 history item is only a text, so its `input` must be empty.")


def write_lamp_layout(rows_or_config: SyntheticConfig | Mapping[str, list[dict]], out: str | Path) -> dict[str, Path]:
    """
    Write synthetic rows in the official LaMP layout: `{out}/{task}/{split}_questions.json` and
    `{out}/{task}/{split}_outputs.json` for every task and split.

    Questions carry the optional `user_id` and `profile_text` keys, and history items LaMP's keys: tagging
    `description`/`tag` (LaMP-2M), rating `text`/`score` (LaMP-3), style `text` (LaMP-7); item ids are
    `"{question id}-{j}"`. Outputs are `{"task": task name, "golds": [{"id": ..., "output": ...}, ...]}`.

    Args:
        rows_or_config (`SyntheticConfig` or `Mapping[str, Sequence[dict]]`): a config to generate from, or what
            [`generate_rows`] returns (split -> rows of the common schema).
        out (`str` or `Path`): the folder to write into; created if missing; existing files are replaced.

    Returns:
        `dict[str, Path]`: task name -> its folder.

    Example:

    ```python
    >>> import tempfile
    >>> from hyperpeft.data.synthetic import SyntheticConfig, write_lamp_layout
    >>> config = SyntheticConfig(train_users=6, test_random_users=3, test_ood_users=3)
    >>> folders = write_lamp_layout(config, tempfile.mkdtemp())
    >>> sorted(path.name for path in folders["synthetic-style"].iterdir())[:2]
    ['test_ood_outputs.json', 'test_ood_questions.json']
    ```
    """
    rows_by_split = generate_rows(rows_or_config) if isinstance(rows_or_config, SyntheticConfig) else rows_or_config
    _check_rows(rows_by_split)
    folders = {}
    for task in SYNTHETIC_TASKS:
        if not any(row["task"] == task for rows in rows_by_split.values() for row in rows):
            continue
        folders[task] = folder = Path(out) / task
        folder.mkdir(parents=True, exist_ok=True)
        input_key, output_key = LAMP_ITEM_KEYS[task]
        for split, rows in rows_by_split.items():
            questions, golds = [], []
            for row in (r for r in rows if r["task"] == task):
                items = [{"id": f"{row['id']}-{j}", input_key: item["input"], output_key: item["output"]}
                         for j, item in enumerate(row["history"])]  # fmt: skip
                if input_key is None:
                    items = [{"id": item["id"], output_key: item[output_key]} for item in items]
                questions.append({"id": row["id"], "input": row["input"], "profile": items,
                                  "user_id": row["user_id"], "profile_text": row["profile_text"]})  # fmt: skip
                golds.append({"id": row["id"], "output": row["output"]})
            (folder / f"{split}_questions.json").write_text(json.dumps(questions, ensure_ascii=False, indent=1))
            (folder / f"{split}_outputs.json").write_text(json.dumps({"task": task, "golds": golds}, indent=1))
    logger.info(f"Wrote the synthetic LaMP layout of {sorted(folders)} under {out}.")
    return folders


@cache
def _all_outputs(task: str, traits: tuple[int, int]) -> frozenset[str]:
    return frozenset(answer_for(task, traits, text) for text in _INPUT_KEYS[task])


def infer_traits(task: str, history: Sequence[Mapping[str, str]]) -> tuple[int, int]:
    """
    The trait combination that best explains a user's history under the task's behaviour rule.

    An item with an input agrees with a combination when the rule gives its output; an item that is only a text (the
    style task) agrees when the combination can write that text at all. Ties go to the first of `TRAIT_COMBOS`.

    Args:
        task (`str`): one of `SYNTHETIC_TASKS`.
        history (`Sequence[Mapping[str, str]]`): the user's items, `{"input": str, "output": str}`.

    Returns:
        `tuple[int, int]`: the two trait values.
    """

    def agreement(traits):
        return sum(answer_for(task, traits, item["input"]) == item["output"] if item["input"]
                   else item["output"] in _all_outputs(task, traits) for item in history)  # fmt: skip

    return max(TRAIT_COMBOS, key=agreement)


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


def _mean_score(metric: str, answers: Sequence[str], golds: Sequence[str]) -> float:
    if metric == "accuracy":
        return sum(a == g for a, g in zip(answers, golds)) / len(golds)
    if metric == "mae":
        return sum(abs(int(a) - int(g)) for a, g in zip(answers, golds)) / len(golds)
    return sum(_rouge().score(g, a)["rougeL"].fmeasure for a, g in zip(answers, golds)) / len(golds)


def _best_non_personalized(task: str, rows: Sequence[Mapping[str, Any]], golds: list[str]) -> float:
    metric = SCORES[task]
    if task == STYLE_TASK.name:  # one rewrite rule for everyone: a user type's, or the message unchanged
        rules = [[answer_for(task, c, row["input"]) for row in rows] for c in TRAIT_COMBOS]
        return max(_mean_score(metric, rule, golds) for rule in rules + [[row["input"] for row in rows]])
    by_class: dict[Any, list[str]] = {}
    for row, gold in zip(rows, golds):
        by_class.setdefault(_INPUT_KEYS[task][row["input"]], []).append(gold)
    pick = max if metric == "accuracy" else min  # the best label for each input class
    total = sum(pick(_mean_score(metric, [label] * len(g), g) for label in TASKS[task].labels) * len(g)
                for g in by_class.values())  # fmt: skip
    return total / len(golds)


def oracle_gap(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    How much the per-user signal matters: the best user-agnostic answer against a trait-aware oracle, per task.

    - Non-personalized: the best answer that depends only on the input, fitted on `rows` themselves (an optimistic
      bound): the best tag per film genre, the rating per review polarity with the lowest MAE, and the single rewrite
      rule (one user type's, or the message unchanged) with the best mean ROUGE-L.
    - Oracle: knows the behaviour rules and reads each user's traits off their history ([`infer_traits`]).

    Scores: accuracy (tagging), MAE (rating; lower is better), ROUGE-L F1 with `rouge_score` (style).

    Args:
        rows (`Sequence[Mapping]`): the rows of one split, as from [`generate_rows`]; other tasks' rows are ignored.

    Returns:
        `dict[str, dict]`: task -> `{"metric", "non_personalized", "oracle", "gap", "rows"}`; `gap` is how much better
        the oracle scores (positive when it is better, whatever the metric).

    Example:

    ```python
    >>> from hyperpeft.data.synthetic import generate_rows, oracle_gap
    >>> gap = oracle_gap(generate_rows()["test_ood"])
    >>> gap["synthetic-tagging"]["oracle"], gap["synthetic-tagging"]["gap"] > 0.5
    (1.0, True)
    ```
    """
    result = {}
    for task in SYNTHETIC_TASKS:
        task_rows = [row for row in rows if row["task"] == task]
        if not task_rows:
            continue
        golds = [row["output"] for row in task_rows]
        oracle = _mean_score(
            SCORES[task], [answer_for(task, infer_traits(task, r["history"]), r["input"]) for r in task_rows], golds
        )
        best = _best_non_personalized(task, task_rows, golds)
        gap = best - oracle if SCORES[task] == "mae" else oracle - best
        result[task] = {"metric": SCORES[task], "non_personalized": best, "oracle": oracle, "gap": gap}
        result[task]["rows"] = len(golds)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m hyperpeft.data.synthetic [--out DIR] [--report] [--seed N]`: write the data and/or print the gap."""
    parser = argparse.ArgumentParser(description="Generate the synthetic user benchmark (default sizes).")
    parser.add_argument("--out", help="write the LaMP layout into this folder")
    parser.add_argument("--report", action="store_true", help="print the non-personalized vs oracle table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.out and not args.report:
        parser.error("nothing to do: pass --out DIR and/or --report")
    config = SyntheticConfig(seed=args.seed)
    rows = generate_rows(config)
    if args.out:  # a command-line tool's output, hence print
        for task, folder in write_lamp_layout(rows, args.out).items():
            print(f"wrote {task} -> {folder}")
    if args.report:
        print(f"config: {asdict(config)}")
        print("| split | task | metric | best non-personalized | oracle | gap | rows |\n|---|---|---|---|---|---|---|")
        for split, split_rows in rows.items():
            for task, r in oracle_gap(split_rows).items():
                print(f"| {split} | {task} | {r['metric']} | {r['non_personalized']:.3f} | {r['oracle']:.3f} | "
                      f"{r['gap']:.3f} | {r['rows']} |")  # fmt: skip


if __name__ == "__main__":
    main()
