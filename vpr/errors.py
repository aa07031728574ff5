"""The one exception type that the `vpr` command turns into a clean, one-line error message."""


class VprError(Exception):
    """A user-facing error: bad input, missing file, mismatched checkpoint.

    The message must say which file (or option) is wrong and what is wrong with it; the command line
    prints it as ``vpr <command>: error: <message>`` and exits with status 2, without a traceback.
    """
