"""The engine's records and files that need no containers: ids and names,
prefix lookup, volumes' bookkeeping, and reading json-file logs."""

import json
import os
import threading
import time

import pytest

from capsa import db
from capsa.engine import logs, names
from capsa.engine.paths import new_id
from capsa.engine.records import Container, Containers
from capsa.engine.volumes import Volumes, copy_up
from capsa.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def conn(tmp_path):
    connection = db.connect(str(tmp_path))
    connection.execute("INSERT INTO images (id, manifest, manifest_type, platform, size, created, added) "
                       "VALUES ('sha256:i', 'sha256:m', 't', 'linux/amd64', 0, '', 0)")  # fmt: skip
    return connection


def container(name: str, cid: str | None = None) -> Container:
    return Container(id=cid or new_id(), name=name, image="sha256:i", image_name="busybox", created=time.time(),
                     state="created", runtime="/usr/bin/runc", config={"command": ["true"]})  # fmt: skip


def test_lookup_by_id_name_and_unique_prefix(conn):
    records = Containers(conn)
    a = container("web", "abc" + "0" * 61)
    b = container("db", "abd" + "0" * 61)
    records.add(a)
    records.add(b)
    assert records.lookup("web").id == a.id
    assert records.lookup("/db").id == b.id
    assert records.lookup("abc").id == a.id
    assert records.lookup(a.id).config == {"command": ["true"]}
    with pytest.raises(InvalidArgument, match="multiple IDs"):
        records.lookup("ab")
    with pytest.raises(NotFound, match="No such container: nope"):
        records.lookup("nope")


def test_names_are_unique_and_checked(conn):
    records = Containers(conn)
    records.add(container("web"))
    with pytest.raises(AlreadyExists, match='"/web" is already in use'):
        records.add(container("web"))
    assert len(records.all()) == 1
    with pytest.raises(InvalidArgument, match="Invalid container name"):
        names.check("-bad")
    generated = names.generate(records.name_taken)
    assert "_" in generated and not records.name_taken(generated)


def test_concurrent_writers_do_not_fail(tmp_path, conn):
    errors = []

    def add_many(prefix: str) -> None:
        try:
            records = Containers(db.connect(str(tmp_path)))
            for i in range(20):
                records.add(container(f"{prefix}{i}"))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=add_many, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(Containers(conn).all()) == 80


def test_volumes_in_use_cannot_go(tmp_path, conn):
    volumes = Volumes(str(tmp_path), conn)
    name = volumes.create("data")
    assert volumes.create("data") == "data" and os.path.isdir(volumes.path("data"))
    with pytest.raises(InvalidArgument, match="invalid characters"):
        volumes.create("bad/name")
    records = Containers(conn)
    user = container("web")
    records.add(user)
    volumes.attach(user.id, name)
    with pytest.raises(FailedPrecondition, match="volume is in use"):
        volumes.remove(name)
    records.delete(user.id)
    anonymous = volumes.create()
    assert volumes.prune() == [anonymous]
    assert volumes.prune(everything=True) == ["data"]
    assert volumes.all() == []


def test_copy_up_never_follows_symlinks_out(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "srv" / "www").mkdir(parents=True)
    (rootfs / "srv" / "www" / "index.html").write_text("hi")
    (rootfs / "escape").symlink_to("/etc")
    target = tmp_path / "volume"
    target.mkdir()
    copy_up(str(rootfs), "/escape", str(target))
    assert os.listdir(target) == []
    copy_up(str(rootfs), "/srv", str(target))
    assert (target / "www" / "index.html").read_text() == "hi"


def write_log(path, lines):
    with open(path, "a") as f:
        for stream, text, when in lines:
            f.write(json.dumps({"log": text, "stream": stream, "time": when}) + "\n")


def test_log_entries_across_rotation_tail_and_since(tmp_path):
    path = str(tmp_path / "container.log")
    write_log(path + ".2", [("stdout", "one\n", "2026-01-01T00:00:01.000000001Z")])
    write_log(path + ".1", [("stderr", "two\n", "2026-01-01T00:00:02Z")])
    write_log(path, [("stdout", "three\n", "2026-01-01T00:00:03.5Z")])
    assert [e["log"] for e in logs.entries(path)] == ["one\n", "two\n", "three\n"]
    assert [e["log"] for e in logs.select(logs.entries(path), 2, None)] == ["two\n", "three\n"]
    since = logs.parse_since("2026-01-01T00:00:02Z")
    assert [e["log"] for e in logs.select(logs.entries(path), None, since)] == ["two\n", "three\n"]
    assert logs.parse_since("10m", now=1000.0) == 400.0
    with pytest.raises(InvalidArgument):
        logs.parse_since("ten minutes")


def test_follow_continues_into_a_rotated_file(tmp_path):
    path = str(tmp_path / "container.log")
    write_log(path, [("stdout", "before\n", "2026-01-01T00:00:00Z")])
    done = threading.Event()

    def writer():
        time.sleep(0.1)
        write_log(path, [("stdout", "a\n", "2026-01-01T00:00:01Z")])
        os.rename(path, path + ".1")
        write_log(path, [("stdout", "b\n", "2026-01-01T00:00:02Z")])
        time.sleep(0.2)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = [e["log"] for e in logs.follow(path, lambda: not done.is_set())]
    thread.join()
    assert seen == ["a\n", "b\n"]


def test_a_made_up_name_taken_since_it_was_drawn_is_drawn_again(tmp_path, monkeypatch):
    """20 `capsa run` at once draw from 1200 names: two may draw the same one."""
    from capsa.engine.containers import Engine

    engine = Engine(root=str(tmp_path / "root"), state=str(tmp_path / "state"))
    engine.images.conn.execute("INSERT INTO images (id, manifest, manifest_type, platform, size, created, added) "
                               "VALUES ('sha256:i', 'sha256:m', 't', 'linux/amd64', 0, '', 0)")  # fmt: skip
    engine.containers.add(container("cool_einstein"))
    drawn = iter(["cool_einstein", "bold_curie"])
    monkeypatch.setattr(names, "generate", lambda taken: next(drawn))
    added = engine._add(container("cool_einstein"), name_given=False)
    assert added.name == "bold_curie" and engine.containers.lookup("bold_curie").id == added.id
    with pytest.raises(AlreadyExists):
        engine._add(container("cool_einstein"), name_given=True)
    engine.close()
