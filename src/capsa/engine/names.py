"""Container names: the user's, checked as Docker checks them, or made up
as Docker makes them up ("adjective_scientist")."""

import random
import re

from capsa.errors import InvalidArgument

_VALID = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

ADJECTIVES = ("admiring", "amazing", "bold", "brave", "busy", "clever", "cool", "dazzling", "eager",
              "elated", "epic", "festive", "focused", "gallant", "gifted", "happy", "hopeful", "jolly",
              "keen", "kind", "laughing", "lucid", "modest", "nifty", "optimistic", "peaceful",
              "practical", "quirky", "relaxed", "serene", "sharp", "stoic", "tender", "trusting",
              "upbeat", "vibrant", "wizardly", "youthful", "zealous", "zen")  # fmt: skip
SCIENTISTS = ("bell", "curie", "darwin", "dijkstra", "einstein", "euler", "fermat", "feynman",
              "galileo", "gauss", "goldberg", "hopper", "hypatia", "kepler", "knuth", "lamport",
              "liskov", "lovelace", "mccarthy", "meitner", "newton", "noether", "pascal", "pike",
              "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak")  # fmt: skip


def check(name: str) -> str:
    if not _VALID.match(name):
        raise InvalidArgument(f'Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
    return name.lstrip("/")


def generate(taken) -> str:
    """A free "adjective_scientist" name; TAKEN(name) says if one is used."""
    for attempt in range(100):
        name = f"{random.choice(ADJECTIVES)}_{random.choice(SCIENTISTS)}"
        if attempt > 10:
            name += str(random.randint(0, 99))
        if not taken(name):
            return name
    raise AssertionError("no free container name after 100 attempts")
