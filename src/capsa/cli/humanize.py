"""Sizes and ages as Docker prints them ("4.26MB", "2 days ago")."""

import time


def size(count: int) -> str:
    """Decimal units with three significant digits, as docker images."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def ago(then: float | None, now: float | None = None) -> str:
    if not then:
        return "N/A"
    seconds = max(0, (now or time.time()) - then)
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    """Docker's HumanDuration."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} second" + ("s" if int(seconds) != 1 else "")
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 1.5:
        return "About an hour"
    if hours < 48:
        return f"{round(hours)} hours"
    days = hours / 24
    if days < 14:
        return f"{int(days)} days"
    if days < 60:
        return f"{int(days / 7)} weeks"
    if days < 730:
        return f"{int(days / 30)} months"
    return f"{int(days / 365)} years"


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (Go writes nanoseconds,
    Python reads at most microseconds)."""
    from datetime import datetime

    if not text:
        return None
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def binary(count: int) -> str:
    """Binary units as docker stats prints memory ("1.5MiB")."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.4g}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
