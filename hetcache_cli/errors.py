"""Error types mapped to exit codes: 2 for bad input, 1 for runtime failures."""


class HetcacheError(Exception):
    """A runtime failure: the input was fine but the work could not be done."""

    exit_code = 1


class InputError(HetcacheError):
    """Bad input from the user. The message is one line: what is wrong and how to fix it."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an edit that kept resumable work; the message says where and how to continue."""
