"""Records: classes of named fields, declared as dataclasses are.

    @record(frozen=True)
    class Ulimit:
        name: str
        soft: int
        hard: int = -1
        seen: list[str] = field(default_factory=list)

`capsa run` cannot afford the standard library's dataclasses: importing it
imports inspect (10-13 ms here), and each class costs about 1 ms more, as
it compiles an __init__, __repr__ and __eq__ (and, frozen, __setattr__,
__delattr__ and __hash__) from source with exec. The two dozen classes the
engine loads for one `run` made that 25-35 ms of CPU, as much as the
container's whole create. A record gets the same methods as shared,
generic functions instead, at no cost per class; building an instance is a
little slower, which a command that makes tens of them never notices.

What a dataclass does that is kept: positional or keyword arguments,
defaults and `field(default_factory=..., compare=False)`, TypeError for a
missing or unknown argument, equality with the same class only, a repr of
the fields, frozen records that refuse assignment and hash by value, and
the module functions asdict(), astuple(), replace() and fields().
"""

MISSING = object()


class Field:
    """One field: its name, its default (or default factory), and whether
    equality looks at it."""

    __slots__ = ("name", "default", "default_factory", "compare")

    def __init__(self, default=MISSING, default_factory=MISSING, compare: bool = True):
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare

    def value(self):
        """The default value for an instance that was not given one."""
        if self.default_factory is not MISSING:
            return self.default_factory()
        return self.default

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


class FrozenError(AttributeError):
    """An assignment to a field of a frozen record."""


def field(*, default=MISSING, default_factory=MISSING, compare: bool = True) -> Field:
    return Field(default, default_factory, compare)


def record(cls=None, *, frozen: bool = False):
    """Make CLS a record of the fields its annotations name (as @dataclass)."""

    def make(cls):
        found = []
        for name in cls.__dict__.get("__annotations__", {}):
            declared = cls.__dict__.get(name, MISSING)
            spec = declared if isinstance(declared, Field) else Field(default=declared)
            spec.name = name
            if isinstance(declared, Field):
                if spec.default is MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, spec.default)
            if found and not _required(found[-1]) and _required(spec):
                raise TypeError(f"non-default argument {name!r} follows default argument")
            found.append(spec)
        cls.__record_fields__ = tuple(found)
        cls.__init__ = _init
        cls.__repr__ = _repr
        cls.__eq__ = _eq
        if frozen:
            cls.__setattr__ = _refuse_set
            cls.__delattr__ = _refuse_delete
            cls.__hash__ = _hash
        else:
            cls.__hash__ = None  # mutable and compared by value: unhashable, as a dataclass
        return cls

    return make if cls is None else make(cls)


def _required(spec: Field) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING


def _init(self, *args, **kwargs):
    specs = type(self).__record_fields__
    if len(args) > len(specs):
        raise TypeError(f"{type(self).__name__}() takes {len(specs)} arguments, {len(args)} given")
    for spec, value in zip(specs, args):
        if spec.name in kwargs:
            raise TypeError(f"{type(self).__name__}() got two values for {spec.name!r}")
        object.__setattr__(self, spec.name, value)
    for spec in specs[len(args):]:
        if spec.name in kwargs:
            value = kwargs.pop(spec.name)
        elif _required(spec):
            raise TypeError(f"{type(self).__name__}() is missing the argument {spec.name!r}")
        else:
            value = spec.value()
        object.__setattr__(self, spec.name, value)
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got an unexpected argument {next(iter(kwargs))!r}")


def _repr(self) -> str:
    inner = ", ".join(f"{spec.name}={getattr(self, spec.name)!r}" for spec in self.__record_fields__)
    return f"{type(self).__qualname__}({inner})"


def _compared(self) -> tuple:
    return tuple(getattr(self, spec.name) for spec in self.__record_fields__ if spec.compare)


def _eq(self, other):
    if type(other) is not type(self):
        return NotImplemented
    return _compared(self) == _compared(other)


def _hash(self) -> int:
    return hash(_compared(self))


def _refuse_set(self, name, value):
    raise FrozenError(f"cannot assign to field {name!r}")


def _refuse_delete(self, name):
    raise FrozenError(f"cannot delete field {name!r}")


def fields(obj) -> tuple[Field, ...]:
    """The fields of a record (class or instance), in declaration order."""
    return obj.__record_fields__


def asdict(obj) -> dict:
    """A record as a dict, records inside it (in lists, tuples, dicts) too."""
    return {spec.name: _plain(getattr(obj, spec.name)) for spec in obj.__record_fields__}


def astuple(obj) -> tuple:
    return tuple(getattr(obj, spec.name) for spec in obj.__record_fields__)


def replace(obj, **changes):
    """A copy of a record with CHANGES."""
    values = {spec.name: getattr(obj, spec.name) for spec in obj.__record_fields__}
    values.update(changes)
    return type(obj)(**values)


def _plain(value):
    if hasattr(type(value), "__record_fields__"):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
