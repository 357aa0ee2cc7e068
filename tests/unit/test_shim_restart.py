"""Restart policies and Docker's back-off (moby's restartmanager)."""

import pytest

from capsa.errors import InvalidArgument
from capsa.shim.restart import MAX_DELAY, RestartPolicy


def delays(policy: RestartPolicy, runs) -> list:
    return [policy.next_delay(code, ran_for, False) for code, ran_for in runs]


def test_the_delay_doubles_from_100ms_up_to_a_minute():
    policy = RestartPolicy.parse("always")
    got = delays(policy, [(0, 0.5)] * 14)
    assert got[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert got[-1] == MAX_DELAY and max(got) == MAX_DELAY
    assert got == sorted(got)


def test_a_run_of_ten_seconds_resets_the_delay():
    policy = RestartPolicy.parse("always")
    assert delays(policy, [(1, 1), (1, 1), (1, 1), (1, 10), (1, 1)]) == [0.1, 0.2, 0.4, 0.1, 0.2]


def test_no_never_restarts():
    assert delays(RestartPolicy.parse("no"), [(1, 0), (0, 0)]) == [None, None]


def test_on_failure_restarts_non_zero_exits_up_to_the_limit():
    policy = RestartPolicy.parse("on-failure:2")
    assert delays(policy, [(1, 0), (137, 0), (1, 0)]) == [0.1, 0.2, None]
    assert delays(RestartPolicy.parse("on-failure:2"), [(0, 0)]) == [None]
    unlimited = RestartPolicy.parse("on-failure")
    assert None not in delays(unlimited, [(1, 0)] * 20)


@pytest.mark.parametrize("name", ["always", "unless-stopped", "on-failure"])
def test_a_stop_by_the_user_ends_every_policy(name):
    policy = RestartPolicy.parse(name)
    assert policy.next_delay(1, 0, True) is None


def test_always_and_unless_stopped_restart_clean_exits():
    for name in ("always", "unless-stopped"):
        assert RestartPolicy.parse(name).next_delay(0, 100, False) == 0.1


@pytest.mark.parametrize("text", ["", "sometimes", "on-failure:x", "on-failure:-1",
                                  "always:3", "no:1", "On-Failure"])  # fmt: skip
def test_bad_policies_are_refused(text):
    with pytest.raises(InvalidArgument, match="invalid restart policy"):
        RestartPolicy.parse(text)


def test_policies_print_as_docker_writes_them():
    assert str(RestartPolicy.parse("on-failure:3")) == "on-failure:3"
    assert str(RestartPolicy.parse("unless-stopped")) == "unless-stopped"
