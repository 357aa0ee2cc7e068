"""Credentials in Docker's config.json format, under $CAPSA_CONFIG."""

import base64
import json
import os
import stat

import pytest

from capsa.errors import InvalidArgument
from capsa.images import credentials


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    directory = tmp_path / "capsa-config"
    monkeypatch.setenv("CAPSA_CONFIG", str(directory))
    return directory


def write(config_dir, data) -> None:
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.json").write_text(data if isinstance(data, str) else json.dumps(data))


def read(config_dir) -> dict:
    return json.loads((config_dir / "config.json").read_text())


def encoded(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_path_follows_capsa_config_then_home(config_dir, monkeypatch, tmp_path):
    assert credentials.path() == str(config_dir / "config.json")
    monkeypatch.delenv("CAPSA_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert credentials.path() == str(tmp_path / "home" / ".capsa" / "config.json")


def test_store_get_erase_round_trip(config_dir):
    assert credentials.get("127.0.0.1:5000") is None
    credentials.store("127.0.0.1:5000", "capsa", "pa:ss wörd")
    assert credentials.get("127.0.0.1:5000") == ("capsa", "pa:ss wörd")
    assert read(config_dir)["auths"]["127.0.0.1:5000"] == {"auth": encoded("capsa", "pa:ss wörd")}
    assert credentials.erase("127.0.0.1:5000") is True
    assert credentials.get("127.0.0.1:5000") is None
    assert credentials.erase("127.0.0.1:5000") is False


def test_file_is_private_and_written_atomically(config_dir):
    credentials.store("example.com", "u", "p")
    mode = os.stat(config_dir / "config.json").st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert sorted(os.listdir(config_dir)) == ["config.json"]  # no temp file left


def test_other_keys_and_hosts_are_kept(config_dir):
    write(config_dir, {"auths": {"other:5000": {"auth": encoded("o", "p")}},
                       "credHelpers": {"x": "y"}, "psFormat": "table"})  # fmt: skip
    credentials.store("mine.example", "me", "secret")
    config = read(config_dir)
    assert config["credHelpers"] == {"x": "y"} and config["psFormat"] == "table"
    assert set(config["auths"]) == {"other:5000", "mine.example"}
    credentials.erase("mine.example")
    assert read(config_dir)["auths"] == {"other:5000": {"auth": encoded("o", "p")}}


def test_docker_hub_is_keyed_as_docker_keys_it(config_dir):
    credentials.store("docker.io", "hubuser", "hubpass")
    assert list(read(config_dir)["auths"]) == ["https://index.docker.io/v1/"]
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert credentials.get(host) == ("hubuser", "hubpass")
    assert credentials.erase("docker.io") is True
    assert read(config_dir)["auths"] == {}


def test_url_keys_match_their_host(config_dir):
    write(config_dir, {"auths": {"https://registry.example:5000/v1/": {"auth": encoded("a", "b")}}})
    assert credentials.get("registry.example:5000") == ("a", "b")
    credentials.store("registry.example:5000", "c", "d")
    assert read(config_dir)["auths"] == {"registry.example:5000": {"auth": encoded("c", "d")}}


def test_username_and_password_fields(config_dir):
    write(config_dir, {"auths": {"h": {"username": "u", "password": "p"}, "empty": {}}})
    assert credentials.get("h") == ("u", "p")
    assert credentials.get("empty") is None


@pytest.mark.parametrize("content", ["{", "[1]", '{"auths": "x"} trailing', '{"auths": ["h"]}'])
def test_broken_file_is_a_one_line_error_naming_it(config_dir, content):
    write(config_dir, content)
    for call in (lambda: credentials.get("h"), lambda: credentials.store("h", "u", "p")):
        with pytest.raises(InvalidArgument) as err:
            call()
        assert str(config_dir / "config.json") in str(err.value)
        assert "\n" not in str(err.value)
    assert (config_dir / "config.json").read_text() == content  # nothing was overwritten


def test_bad_auth_value_is_refused(config_dir):
    write(config_dir, {"auths": {"h": {"auth": "!!!"}, "g": {"auth": base64.b64encode(b"nocolon").decode()}}})
    with pytest.raises(InvalidArgument, match="bad \"auth\" value"):
        credentials.get("h")
    with pytest.raises(InvalidArgument, match="not base64 of user:password"):
        credentials.get("g")
