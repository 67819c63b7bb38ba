"""The one exception type that means "the user gave us something wrong"."""


class UserError(Exception):
    """A problem with a path, file or flag the user supplied.

    The CLI prints it as a single ``error: ...`` line and exits with status 2; library code raises
    it instead of printing, so that callers other than the CLI can handle it too.
    """
