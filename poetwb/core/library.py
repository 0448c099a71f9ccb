"""The poem library: saved poems in sqlite3 in the data dir (durable, one transaction per change), search, delete,
and Markdown export that keeps the verse's line breaks and its punctuation as written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poetwb.core import paths
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_write_text
from poetwb.core.text import safe_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS poems (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt TEXT NOT NULL,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,
    adapter TEXT NOT NULL DEFAULT '',
    sampling TEXT NOT NULL DEFAULT '{}',
    seed INTEGER NOT NULL DEFAULT 0,
    form TEXT NOT NULL DEFAULT ''
);
"""


@dataclass
class Poem:
    text: str
    prompt: str
    model: str
    mode: str = "raw"
    adapter: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    form: str = ""
    """The form it was written in ("sonnet: 14 lines, ABAB CDCD EFEF GG, 10 syllables"); empty for free verse."""
    id: int | None = None
    created: str = ""

    @property
    def title(self) -> str:
        first = next((line.strip() for line in self.text.splitlines() if line.strip()), "Untitled")
        return first[:60]


class Library:
    """A small sqlite3 store; every write commits at once, so a killed app loses nothing saved."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.data_dir() / "poems.sqlite3"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise PoetError(f"cannot open the poem library at {self.path} ({exc}); check POETWB_HOME") from exc
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(poems)")}
        if "form" not in columns:  # libraries written before poems had forms
            self.db.execute("ALTER TABLE poems ADD COLUMN form TEXT NOT NULL DEFAULT ''")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def add(self, poem: Poem) -> Poem:
        """Save a poem; its text and prompt are made terminal-safe first (core.text.safe_text)."""
        poem.text, poem.prompt = safe_text(poem.text), safe_text(poem.prompt)
        if not poem.text.strip():
            raise PoetError("nothing to save: the poem is empty")
        created = dt.datetime.now().isoformat(timespec="seconds")
        with self.db:
            cur = self.db.execute(
                "INSERT INTO poems (created, text, prompt, mode, model, adapter, sampling, seed, form) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (created, poem.text, poem.prompt, poem.mode, poem.model, poem.adapter,
                 json.dumps(poem.sampling, sort_keys=True), poem.seed, poem.form),
            )
        poem.id, poem.created = cur.lastrowid, created
        return poem

    def search(self, query: str = "") -> list[Poem]:
        sql = "SELECT id, created, text, prompt, mode, model, adapter, sampling, seed, form FROM poems"
        args: tuple[Any, ...] = ()
        if query.strip():
            sql += " WHERE text LIKE ? OR prompt LIKE ? OR model LIKE ? OR adapter LIKE ? OR form LIKE ?"
            like = f"%{query.strip()}%"
            args = (like, like, like, like, like)
        rows = self.db.execute(sql + " ORDER BY id DESC", args).fetchall()
        # rows saved by an older version may hold control characters: what is read is made safe too
        return [Poem(id=r[0], created=r[1], text=safe_text(r[2]), prompt=safe_text(r[3]), mode=r[4],
                     model=r[5], adapter=r[6],
                     sampling=json.loads(r[7] or "{}"), seed=r[8], form=r[9]) for r in rows]

    def get(self, ids: Iterable[int]) -> list[Poem]:
        wanted = set(ids)
        return [p for p in self.search() if p.id in wanted]

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        with self.db:
            cur = self.db.executemany("DELETE FROM poems WHERE id = ?", [(i,) for i in ids])
        return cur.rowcount


_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def escape_verse(text: str) -> str:
    """Markdown for a poem: each line a hard break, punctuation escaped so nothing becomes emphasis, a heading,
    a list or a link, and leading spaces kept as non-breaking spaces (no accidental code blocks)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            out.append("")
            continue
        stripped = line.lstrip(" ")
        indent = "&nbsp;" * (len(line) - len(stripped))
        out.append(indent + _SPECIAL.sub(r"\\\1", stripped.rstrip()) + "\\")
    # a hard break (trailing backslash) is not allowed on a stanza's last line
    for i, line in enumerate(out):
        if line.endswith("\\") and (i + 1 == len(out) or out[i + 1] == ""):
            out[i] = line[:-1]
    return "\n".join(out)


def to_markdown(poem: Poem) -> str:
    poem = dataclasses.replace(poem, text=safe_text(poem.text), prompt=safe_text(poem.prompt))
    meta = {
        "title": poem.title, "created": poem.created, "prompt": poem.prompt, "mode": poem.mode,
        "model": poem.model, "adapter": poem.adapter or "(base model)", "form": poem.form or "free verse",
        "seed": poem.seed,
        "sampling": ", ".join(f"{k}={v}" for k, v in sorted(poem.sampling.items())),
    }
    lines = ["---"] + [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in meta.items()] + ["---", ""]
    heading = _SPECIAL.sub(r"\\\1", poem.title)
    lines += [f"## {heading}", "", escape_verse(poem.text), ""]
    return "\n".join(lines)


def export_markdown(poems: list[Poem], folder: Path, one_file: bool = True) -> list[Path]:
    """Write poems as Markdown into folder (one poems.md, or one file per poem). Atomic per file."""
    if not poems:
        raise PoetError("no poems selected to export")
    folder = folder.expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".poetwb-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PoetError(f"cannot write to {folder} ({exc.strerror or exc}); pick another folder") from exc
    if one_file:
        target = folder / "poems.md"
        atomic_write_text(target, "\n\n".join(to_markdown(p) for p in poems))
        return [target]
    written = []
    for p in poems:
        slug = re.sub(r"[^a-z0-9]+", "-", p.title.lower()).strip("-")[:40] or "poem"
        target = folder / f"{p.id:04d}-{slug}.md"
        atomic_write_text(target, to_markdown(p))
        written.append(target)
    return written
