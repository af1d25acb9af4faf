"""The one error type users see.

Anything raised as :class:`UserError` is bad input or an unmet precondition: the CLI prints its
message on one line and exits with code 2. Every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
