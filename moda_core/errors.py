"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""


class ModaError(Exception):
    """Something the user asked for is wrong or missing; the message says what, where and what was expected."""
