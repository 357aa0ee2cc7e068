"""The error classes every layer raises; callers catch classes, never strings.

Messages are lowercase and read "failed to <verb> <object>: <cause>", naming
the id, path or pid involved. The command-line boundary prints them once.
"""


class CapsaError(Exception):
    """Base of every expected failure; the CLI prints it as one line."""


class NotFound(CapsaError):
    """The named container, file or object does not exist."""


class AlreadyExists(CapsaError):
    """An object with that id or name already exists."""


class InvalidArgument(CapsaError):
    """The input (flags, config.json, a signal name) is malformed."""


class FailedPrecondition(CapsaError):
    """The object is not in a state that allows the operation."""


class Unsupported(CapsaError):
    """The host lacks what was asked for (a namespace, AppArmor, a controller)."""
