"""Waiting for something a container does, in every kind of test."""

import time


def wait_for(predicate, timeout: float = 10, what: str = "condition", interval: float = 0.02):
    """Poll PREDICATE until it returns something truthy (returned); fail
    after TIMEOUT seconds, naming WHAT was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
