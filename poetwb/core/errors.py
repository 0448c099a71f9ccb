"""One exception type for mistakes a user can fix, so every front end can show a one-line message, not a traceback."""


class PoetError(Exception):
    """A problem with the user's input or environment. The message says what is wrong and what to do."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """A one-line description of any exception: its message's first line, or its type when the message is empty."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if isinstance(exc, PoetError):
        return line or "unknown error"
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
