"""Restart policies with Docker's semantics and Docker's back-off.

    no               never restart
    always           restart after any exit, unless stopped by the user
    unless-stopped   the same here (it differs in Docker only when the daemon restarts)
    on-failure[:N]   restart after a non-zero exit, at most N times (no N: no limit)

The delay before a restart (moby's restartmanager): 100 ms, doubling after
every restart up to one minute, and back to 100 ms when the container had run
for 10 s or more. A stop by the user (the `stop` op, or a kill that Docker
counts as one) ends the policy for good.
"""

from capsa.errors import InvalidArgument

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds a run must last for the delay to start again


class RestartPolicy:
    """One container's policy, and the state its back-off keeps between runs.

        policy = RestartPolicy.parse("on-failure:2")
        policy.next_delay(exit_code=1, ran_for=0.2, stopped_by_user=False)  # 0.1
        policy.next_delay(exit_code=1, ran_for=0.2, stopped_by_user=False)  # 0.2
        policy.next_delay(exit_code=1, ran_for=0.2, stopped_by_user=False)  # None
    """

    def __init__(self, name: str = "no", max_retries: int = 0):
        self.name = name
        self.max_retries = max_retries
        self.restarts = 0  # restarts decided so far (on-failure's count)
        self.delay = 0.0

    @classmethod
    def parse(cls, text: str) -> "RestartPolicy":
        name, colon, count = text.partition(":")
        if name in ("no", "always", "unless-stopped") and not colon:
            return cls(name)
        if name == "on-failure":
            if not colon:
                return cls(name)
            if count.isascii() and count.isdigit():
                return cls(name, int(count))
        if name in ("no", "always", "unless-stopped"):
            raise InvalidArgument(f"invalid restart policy {text!r}: maximum retry count "
                                  f"cannot be used with restart policy {name!r}")  # fmt: skip
        raise InvalidArgument(f"invalid restart policy {text!r}")

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def next_delay(self, exit_code: int, ran_for: float, stopped_by_user: bool) -> float | None:
        """Seconds to wait before restarting after this exit, or None: no restart."""
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0 else min(self.delay * 2, MAX_DELAY)
        if stopped_by_user or not self._wants(exit_code):
            return None
        self.restarts += 1
        return self.delay

    def _wants(self, exit_code: int) -> bool:
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure":
            under_limit = self.max_retries == 0 or self.restarts < self.max_retries
            return exit_code != 0 and under_limit
        return False
