"""The CNI protocol against fake plugins (shell scripts on CNI_PATH): what
each plugin is given, the order of ADD and DEL, errors, and the cache."""

import json
import os
import stat

import pytest

from capsa.network import cni

PLUGIN = """#!/bin/sh
config=$(cat)
echo "$CNI_COMMAND $(basename "$0") $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME" >> "{log}"
echo "$config" > "{log}.$CNI_COMMAND.$(basename "$0")"
{body}
"""
RESULT = '{"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24"}], "from": "%s"}'


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    monkeypatch.setenv("CNI_PATH", str(tmp_path))

    def make(name: str, body: str = "") -> None:
        path = tmp_path / name
        path.write_text(PLUGIN.format(log=log, body=body))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def calls() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def given(command: str, name: str) -> dict:
        return json.loads((tmp_path / f"calls.{command}.{name}").read_text())

    make.calls, make.given = calls, given
    return make


def conflist(*names: str) -> dict:
    return {"cniVersion": "1.0.0", "name": "net1",
            "plugins": [{"type": n, **({"capabilities": {"portMappings": True}} if n == "ports" else {})}
                        for n in names]}  # fmt: skip


def test_add_chains_results_and_fills_capabilities(plugins):
    plugins("first", f"echo '{RESULT % 'first'}'")
    plugins("ports", f"echo '{RESULT % 'ports'}'")
    attachment = cni.Attachment("c1", "/run/netns/c1", "eth0", {"portMappings": [{"hostPort": 1}], "other": 1})
    result = cni.add(conflist("first", "ports"), attachment)
    assert result["from"] == "ports"
    assert plugins.calls() == ["ADD first c1 /run/netns/c1 eth0", "ADD ports c1 /run/netns/c1 eth0"]
    first, second = plugins.given("ADD", "first"), plugins.given("ADD", "ports")
    assert first == {"cniVersion": "1.0.0", "name": "net1", "type": "first"}
    assert second["prevResult"]["from"] == "first"
    assert second["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]} and "capabilities" not in second


def test_a_failed_add_undoes_the_plugins_run_so_far(plugins):
    plugins("first", f"echo '{RESULT % 'first'}'")
    plugins("broken", 'echo \'{"code": 7, "msg": "no bridge", "details": "capsa0"}\'; exit 1')
    plugins("never")
    with pytest.raises(cni.PluginError, match=r"CNI plugin broken failed \(ADD\): no bridge: capsa0"):
        cni.add(conflist("first", "broken", "never"), cni.Attachment("c1", "/ns", "eth0"))
    assert plugins.calls() == ["ADD first c1 /ns eth0", "ADD broken c1 /ns eth0",
                               "DEL broken c1 /ns eth0", "DEL first c1 /ns eth0"]  # fmt: skip


def test_del_runs_in_reverse_with_the_result_and_tries_every_plugin(plugins):
    plugins("first")
    plugins("failing", "echo oops >&2; exit 1")
    with pytest.raises(cni.PluginError, match="oops"):
        cni.delete(conflist("first", "failing"), cni.Attachment("c1", "", "eth0"), {"ips": []})
    assert plugins.calls() == ["DEL failing c1  eth0", "DEL first c1  eth0"]
    assert plugins.given("DEL", "first")["prevResult"] == {"ips": []}


def test_check_runs_in_order_with_the_result(plugins):
    plugins("first")
    plugins("second", "echo '{\"code\": 3, \"msg\": \"veth gone\"}'; exit 1")
    with pytest.raises(cni.PluginError, match=r"second failed \(CHECK\): veth gone"):
        cni.check(conflist("first", "second"), cni.Attachment("c1", "/ns", "eth0"), {"ips": [1]})
    assert plugins.calls() == ["CHECK first c1 /ns eth0", "CHECK second c1 /ns eth0"]
    assert plugins.given("CHECK", "first")["prevResult"] == {"ips": [1]}


def test_a_missing_plugin_names_the_package():
    with pytest.raises(cni.PluginError, match="containernetworking-plugins"):
        cni.find_plugin("no-such-plugin")
    with pytest.raises(cni.PluginError, match="invalid"):
        cni.find_plugin("../bridge")


def test_a_plugin_printing_garbage_is_an_error(plugins):
    plugins("noisy", "echo not json")
    with pytest.raises(cni.PluginError, match="printed no JSON"):
        cni.run_plugin("ADD", {"type": "noisy"}, cni.Attachment("c1", "", "eth0"))


def test_the_cache_keeps_what_del_needs(tmp_path):
    cache = cni.Cache(str(tmp_path / "cache"))
    attachment = cni.Attachment("c" * 64, "/run/capsa/netns/c", "eth1", {"portMappings": []})
    cache.write("n" * 64, conflist("bridge"), attachment, None)
    cache.write("n" * 64, conflist("bridge"), attachment, {"ips": [1]})
    config, again, result = cache.read("n" * 64, "c" * 64, "eth1")
    assert config == conflist("bridge") and result == {"ips": [1]}
    assert (again.container_id, again.netns, again.ifname) == (attachment.container_id, attachment.netns, "eth1")
    assert cache.entries_of("c" * 64) == [("n" * 64, "eth1")]
    cache.remove("n" * 64, "c" * 64, "eth1")
    assert cache.read("n" * 64, "c" * 64, "eth1") is None and os.listdir(cache.directory) == []
