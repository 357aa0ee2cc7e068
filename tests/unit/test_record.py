"""capsa.record: what the engine's classes rely on from a dataclass, and its reason to exist."""

import subprocess
import sys

import pytest

from capsa.record import FrozenError, asdict, astuple, field, fields, record, replace


@record
class Box:
    name: str
    size: int = 1
    tags: list = field(default_factory=list)
    note: str = field(default="", compare=False)


@record(frozen=True)
class Point:
    x: int
    y: int = 0


def test_arguments_by_position_or_keyword_with_defaults():
    assert astuple(Box("a", 2)) == ("a", 2, [], "")
    assert astuple(Box(size=3, name="b", tags=["t"])) == ("b", 3, ["t"], "")
    first, second = Box("a"), Box("a")
    first.tags.append("x")
    assert second.tags == []  # a fresh default per instance
    assert [f.name for f in fields(Box)] == ["name", "size", "tags", "note"]
    assert Box.size == 1 and not hasattr(Box, "tags")


@pytest.mark.parametrize("call, message", [
    (lambda: Box(), "missing the argument 'name'"),
    (lambda: Box("a", name="b"), "two values for 'name'"),
    (lambda: Box("a", colour="red"), "unexpected argument 'colour'"),
    (lambda: Box("a", 1, [], "", 5), "takes 4 arguments, 5 given"),
])  # fmt: skip
def test_bad_arguments_are_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError, match="non-default argument 'b'"):
        @record
        class Wrong:
            a: int = 0
            b: int


def test_equality_repr_and_hashing():
    assert Box("a", note="x") == Box("a", note="y")  # compare=False
    assert Box("a") != Box("b") and Box("a") != ("a", 1, [], "")
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert len({Point(1), Point(1), Point(2)}) == 2
    with pytest.raises(TypeError):
        hash(Box("a"))  # mutable, compared by value


def test_frozen_records_refuse_changes():
    point = Point(1)
    with pytest.raises(FrozenError):
        point.x = 2
    with pytest.raises(AttributeError):
        del point.y
    assert replace(point, y=5) == Point(1, 5) and point == Point(1)


def test_asdict_goes_into_containers():
    box = Box("a", tags=[Point(1, 2)], note="n")
    assert asdict(box) == {"name": "a", "size": 1, "tags": [{"x": 1, "y": 2}], "note": "n"}


def test_the_engine_loads_neither_dataclasses_nor_inspect():
    """The reason for capsa.record: `capsa run` pays for every import."""
    code = ("import sys; import capsa.engine.containers, capsa.engine.bundle, capsa.network.endpoints; "
            "print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out == "[]\n"
