"""libc, bound through the `_ctypes` extension directly.

`import ctypes` costs about 7 ms on the machines capsa is measured on (its
package defines hundreds of classes); the runtime's whole start-up budget is
a few times that. The few C types and calls the kernel wrappers need are
declared here on top of `_ctypes` instead, at a cost of well under 1 ms.
"""

import _ctypes
import posix  # not os: the shim imports this module too (see capsa.shim)
from _ctypes import FUNCFLAG_CDECL, FUNCFLAG_USE_ERRNO, CFuncPtr, _SimpleCData, get_errno


class c_int(_SimpleCData):
    _type_ = "i"


class c_long(_SimpleCData):
    _type_ = "l"


class c_char(_SimpleCData):
    _type_ = "c"


class _IntFunction(CFuncPtr):
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _LongFunction(CFuncPtr):
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class Library:
    """A shared library whose functions are looked up on first use."""

    def __init__(self, name: str | None):
        self._handle = _ctypes.dlopen(name, posix.RTLD_NOW)

    def __getattr__(self, name: str):
        function = _IntFunction((name, self))
        setattr(self, name, function)
        return function

    def long_function(self, name: str):
        return _LongFunction((name, self))


libc = Library(None)
_syscall = libc.long_function("syscall")
_array_types: dict[int, type] = {}


def buffer(data: bytes | int):
    """A mutable C char array (passed as a pointer), from bytes or a size."""
    size = data if isinstance(data, int) else len(data)
    kind = _array_types.get(size)
    if kind is None:
        kind = type(f"char_{size}", (_ctypes.Array,), {"_type_": c_char, "_length_": size})
        _array_types[size] = kind
    buf = kind()
    if not isinstance(data, int):
        buf.raw = data
    return buf


def check(result: int, what: str = "") -> int:
    """Return result, or raise OSError(errno) when a libc call returned -1."""
    if result == -1:
        err = get_errno()
        raise OSError(err, f"{what}: {posix.strerror(err)}" if what else posix.strerror(err))
    return result


def syscall(number: int, *args) -> int:
    """A raw system call; int arguments are passed as C longs."""
    args = tuple(c_long(a) if isinstance(a, int) else a for a in args)
    return check(_syscall(c_long(number), *args))
