"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class AgqError(Exception):
    """A user-facing problem: bad config value, missing or corrupt file, unsupported layer.

    The message must name the problem and, where there is one, the fix. ``exit_code`` lets a stage ask
    for a distinct status (the no-Vivado stop of ``agq build`` does).
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
