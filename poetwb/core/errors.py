"""One exception type for mistakes a user can fix, so every front end can show a one-line message, not a traceback."""


class PoetError(Exception):
    """A problem with the user's input or environment. The message says what is wrong and what to do."""
