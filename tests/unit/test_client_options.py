"""The docker-py shaped client turns its keyword arguments into the same
flags `capsa run` checks."""

import pytest

from capsa.client import _options
from capsa.errors import CapsaError, InvalidArgument


def test_keywords_become_run_options():
    options = _options("busybox", "sh -c 'echo hi'", {
        "environment": {"A": "1"}, "working_dir": "/tmp", "user": "nobody", "mem_limit": "64m",
        "labels": {"team": "x"}, "volumes": {"/srv": {"bind": "/data", "mode": "ro"}},
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 2}, "cap_drop": ["NET_RAW"],
        "tmpfs": {"/run": "size=1m"}, "name": "web"}, detach=True)  # fmt: skip
    assert options.command == ["sh", "-c", "echo hi"]
    assert options.env == ["A=1"] and options.workdir == "/tmp" and options.user == "nobody"
    assert options.memory == 64 << 20 and options.labels == {"team": "x"}
    assert options.volumes == ["/srv:/data:ro"] and options.tmpfs == ["/run:size=1m"]
    assert options.restart == "on-failure:2" and options.cap_drop == ["NET_RAW"] and options.name == "web"


def test_bad_keywords_are_refused():
    with pytest.raises(CapsaError, match="unsupported arguments: bogus"):
        _options("busybox", None, {"bogus": 1}, detach=True)
    with pytest.raises(InvalidArgument):
        _options("busybox", None, {"mem_limit": "lots"}, detach=True)


def test_network_keywords_as_docker_py_takes_them():
    options = _options("busybox", None, {
        "network": "appnet", "ports": {"80/tcp": 8080, "53/udp": ("127.0.0.1", 5353), "9000/tcp": None,
                                       "443/tcp": [8443, ("127.0.0.1",)]},
        "dns": ["10.0.0.53"], "extra_hosts": {"db": "10.1.2.3"}, "publish_all_ports": True}, detach=True)  # fmt: skip
    assert options.network == "appnet" and options.publish_all
    assert options.publish == ["8080:80/tcp", "127.0.0.1:5353:53/udp", "9000/tcp", "8443:443/tcp",
                               "127.0.0.1::443/tcp"]  # fmt: skip
    assert options.dns == ["10.0.0.53"] and options.add_host == ["db:10.1.2.3"]
