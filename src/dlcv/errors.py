"""The exception types that mean "the user gave us something wrong", and how messages count and list names."""

from collections.abc import Sequence


class UserError(Exception):
    """A problem with a path, file or flag the user supplied.

    The CLI prints it as a single ``error: ...`` line and exits with status 2; library code raises
    it instead of printing, so that callers other than the CLI can handle it too.
    """


class OptionError(UserError):
    """A bad value of one training option (``option``, as a config file spells it).

    ``resolve_config`` knows whether the value came from a YAML file or a flag, and names that
    source in front of the message, so that the user sees what to fix.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def counted(count: int, noun: str) -> str:
    """``1 image``, ``3 images``: a count in a message, read as English (``noun`` takes a plain ``s``)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def abbreviate(names: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and 7 more``: enough names to find the culprits, never a screenful."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
