"""The exception types that mean "the user gave us something wrong"."""


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
