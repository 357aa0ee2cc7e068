"""Healthcheck state with Docker's rules (no container: results are fed in)."""

from capsa.shim.health import MAX_LOG_ENTRIES, Health


def feed(health: Health, *codes, since_start: float = 100.0) -> list[str]:
    seen = []
    for code in codes:
        health.record("s", "e", code, f"exit {code}", since_start)
        seen.append(health.status)
    return seen


def test_a_success_makes_healthy_and_retries_failures_unhealthy():
    health = Health(retries=3, start_period=0)
    assert health.status == "starting"
    assert feed(health, 0, 1, 1, 1, 0) == ["healthy", "healthy", "healthy", "unhealthy", "healthy"]
    assert health.failing_streak == 0


def test_failures_in_the_start_period_do_not_count_until_a_success():
    health = Health(retries=1, start_period=5)
    assert feed(health, 1, 1, since_start=1) == ["starting", "starting"]
    assert health.failing_streak == 0
    assert feed(health, 1, since_start=6) == ["unhealthy"]
    health = Health(retries=1, start_period=5)
    assert feed(health, 0, 1, since_start=1) == ["healthy", "unhealthy"]


def test_the_log_keeps_the_last_five_results():
    health = Health(retries=3, start_period=0)
    feed(health, *range(8))
    assert len(health.log) == MAX_LOG_ENTRIES
    assert [e["exit_code"] for e in health.log] == [3, 4, 5, 6, 7]
    assert set(health.log[0]) == {"start", "end", "exit_code", "output"}


def test_a_restart_starts_over_but_keeps_the_log():
    health = Health(retries=1, start_period=0)
    feed(health, 1)
    health.reset()
    assert health.as_dict() == {"status": "starting", "failing_streak": 0,
                                "log": [{"start": "s", "end": "e", "exit_code": 1,
                                         "output": "exit 1"}]}  # fmt: skip
