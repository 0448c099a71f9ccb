"""Clean text in, clean text out: one place that decides what a poem's text may hold.

In: every corpus and instruction source passes its text through `clean_poem` / `clean_field`, so a table whose poems
use Windows or old-Mac line ends (the Poetry Foundation CSV's poems use `\\r\\r\\n` and are padded with blank lines and
spaces) trains on the same text as a tidy .txt file; a tuned model never learns to emit carriage returns.
Out: generated text shown in the workbench, saved to the library or exported goes through `safe_text`, so a model
that emits an escape sequence or a carriage return cannot move the terminal's cursor or rewrite what is on screen.
"""

from __future__ import annotations

import re
import unicodedata

_NEWLINES = re.compile(r"\r*\n|\r")
# C0 controls but tab and newline, DEL, and C1 controls (0x9b is a one-byte CSI on some terminals)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# complete escape sequences (CSI ... final, OSC ... BEL/ST, two-character ESC x) go whole, not just their ESC
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")


def normalize_newlines(text: str) -> str:
    """`\\r\\n`, `\\r\\r\\n` and a lone `\\r` all become `\\n`."""
    return _NEWLINES.sub("\n", text)


def clean_poem(text: str) -> str:
    """A poem as training text: NFC Unicode, `\\n` line ends, no trailing spaces on any line, no blank lines before
    or after it; indentation inside the poem and its stanza breaks are kept. Control characters other than tab go."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", normalize_newlines(unicodedata.normalize("NFC", text))))
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def clean_field(text: str) -> str:
    """A one-line field (title, poet, tags, a request): clean_poem, then stripped at both ends."""
    return clean_poem(text).strip()


def safe_text(text: str) -> str:
    """Text fit for a terminal: line ends normalised, escape sequences and every control character that moves the
    cursor or changes the screen (all C0 but tab and newline, DEL, C1) removed; NFC Unicode."""
    text = normalize_newlines(unicodedata.normalize("NFC", text))
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class SafeStream:
    """safe_text for a stream of chunks: carriage returns at a chunk's end wait for the next chunk, so a `\\r\\n`
    split across two chunks is still one line end. Call `end()` for what is left."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        kept = text.rstrip("\r")
        self._pending = text[len(kept):]
        return safe_text(kept)

    def end(self) -> str:
        text, self._pending = self._pending, ""
        return safe_text(text)


def tokens(n: int) -> str:
    """'1 token', '2 tokens': a count as a footer or a CLI line says it."""
    return f"{n} token" if n == 1 else f"{n} tokens"
