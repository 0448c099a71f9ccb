"""The poem library: saved poems in sqlite3 in the data dir (durable, one transaction per change), search, delete,
and Markdown export that keeps the verse's line breaks and its punctuation as written.

The Markdown is plain CommonMark that GitHub renders the same way: a heading per poem, the verse with hard line breaks
(a trailing backslash), then its provenance as a bullet list. No `---` metadata block: outside the first lines of a
file (a one-file export of several poems) CommonMark reads it as a rule and a heading made of the metadata."""

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

    def to_dict(self) -> dict[str, Any]:
        """The poem and its provenance, as `poetwb poems list --json` prints it."""
        run, stage = adapter_run(self.adapter)
        return {"id": self.id, "created": self.created, "title": self.title, "text": self.text,
                "prompt": self.prompt, "mode": self.mode, "model": self.model, "adapter": self.adapter or None,
                "run": run, "stage": stage, "form": self.form or "free", "seed": self.seed,
                "sampling": self.sampling}


def adapter_run(adapter: str) -> tuple[str | None, int | None]:
    """(run id, stage) of a run's adapter path (…/runs/<id>/adapters/stageN), from the path alone, so a deleted
    run still names itself; (None, None) for the base model or a free-standing adapter folder."""
    if not adapter:
        return None, None
    path = Path(adapter)
    if path.parent.name != "adapters" or not path.name.startswith("stage") or not path.name[5:].isdigit():
        return None, None
    return path.parent.parent.name, int(path.name[5:])


def describe_adapter(adapter: str) -> str:
    """'run 20261130-smollm2-ab12, stage 2', 'adapter folder /x/y', or 'none (base model)'."""
    if not adapter:
        return "none (base model)"
    run, stage = adapter_run(adapter)
    return f"run {run}, stage {stage}" if run else f"adapter folder {adapter}"


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

    def get_exactly(self, ids: Iterable[int]) -> list[Poem]:
        """The poems with these ids, in the order given; PoetError naming the unknown ids if any is missing."""
        ids = list(dict.fromkeys(ids))
        found = {p.id: p for p in self.get(ids)}
        _check_known(ids, set(found))
        return [found[i] for i in ids]

    def delete(self, ids: Iterable[int], strict: bool = False) -> int:
        """Delete the poems with these ids. strict: if any id is unknown, raise PoetError and delete nothing."""
        ids = list(dict.fromkeys(ids))
        with self.db:  # one transaction: the check and the deletion see the same library
            if strict:
                marks = ",".join("?" * len(ids))
                known = {r[0] for r in self.db.execute(f"SELECT id FROM poems WHERE id IN ({marks})", ids)}
                _check_known(ids, known)
            cur = self.db.executemany("DELETE FROM poems WHERE id = ?", [(i,) for i in ids])
        return cur.rowcount


def _check_known(ids: list[int], known: set[int | None]) -> None:
    unknown = [i for i in ids if i not in known]
    if unknown:
        listed = ", ".join(str(i) for i in unknown)
        raise PoetError(f"no poem with id {listed} in the library; `poetwb poems list` shows the ids")


# Every character that could start Markdown syntax in a line of verse: emphasis, code, links, HTML, headings, lists,
# setext underlines (= and -), tables, strikethrough, entities (&), and GitHub's math ($).
_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~=&$])")


# Inside a line (a list item's value) only these can start inline syntax; ".", "-", "(" and the rest matter only at
# a line's start or after "]", so they stay unescaped and the Markdown source stays readable.
_INLINE = re.compile(r"([\\`*_{}\[\]<>&$|~])")
_BACKSLASHED = r"\\\1"


def _escape(text: str) -> str:
    return _SPECIAL.sub(r"\\\1", text)


def escape_verse(text: str) -> str:
    """Markdown for a poem: each line a hard break, punctuation escaped so nothing becomes emphasis, a heading,
    a list or a link, and leading spaces kept as non-breaking spaces (no accidental code blocks).

    Why a trailing backslash: it is CommonMark's visible hard break, which GitHub renders as <br>, and unlike two
    trailing spaces no editor strips it. A fenced block would keep the spacing too, but GitHub shows it in a
    monospace box that does not wrap long lines; a poem should read as text."""
    out = []
    for line in text.expandtabs(4).splitlines():
        if not line.strip():
            out.append("")
            continue
        stripped = line.lstrip(" ")
        indent = "&nbsp;" * (len(line) - len(stripped))
        out.append(indent + _escape(stripped.rstrip()) + "\\")
    # a hard break (trailing backslash) is not allowed on a stanza's last line
    for i, line in enumerate(out):
        if line.endswith("\\") and (i + 1 == len(out) or out[i + 1] == ""):
            out[i] = line[:-1]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def provenance(poem: Poem) -> list[tuple[str, str]]:
    """What a poem came from, as (label, value) pairs in reading order."""
    from poetwb.core.config import describe_sampling

    sampling = {k: v for k, v in poem.sampling.items() if k != "seed"}
    return [("prompt", poem.prompt), ("mode", poem.mode), ("model", poem.model),
            ("adapter", describe_adapter(poem.adapter)), ("form", poem.form or "free verse"),
            ("seed", str(poem.seed)), ("sampling", describe_sampling(sampling) or "(not recorded)"),
            ("saved", poem.created.replace("T", " ") or "(unknown)"),
            *([("id", str(poem.id))] if poem.id is not None else [])]


def to_markdown(poem: Poem, level: int = 1) -> str:
    """One poem: a heading (its first line), the verse, and its provenance as a bullet list. Text that came from a
    model or a user is made terminal-safe first (core.text.safe_text)."""
    poem = dataclasses.replace(poem, text=safe_text(poem.text), prompt=safe_text(poem.prompt))
    lines = [f"{'#' * level} {_escape(poem.title)}", "", escape_verse(poem.text) or "*(empty)*", ""]
    lines += [f"- **{label}:** {_INLINE.sub(_BACKSLASHED, ' '.join(value.split())) or '(none)'}"
              for label, value in provenance(poem)]
    return "\n".join(lines) + "\n"


def poems_markdown(poems: list[Poem]) -> str:
    """Several poems in one document: a title line, then each poem under its own second-level heading."""
    when = dt.datetime.now().isoformat(sep=" ", timespec="minutes")
    head = f"# Poems\n\n{len(poems)} poem{'s' * (len(poems) != 1)} from the poetwb library, exported {when}.\n"
    return "\n".join([head, *(to_markdown(p, level=2) for p in poems)])


def _check_writable(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise PoetError(f"{folder} is a file, not a folder; pick a folder to export into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".poetwb-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PoetError(f"cannot write to {folder} ({exc.strerror or exc}); pick another folder") from exc


def export_markdown_file(poems: list[Poem], target: Path) -> Path:
    """Write poems as one Markdown file at target (atomic: a reader sees the old file or the whole new one)."""
    if not poems:
        raise PoetError("no poems selected to export")
    target = target.expanduser()
    if target.is_dir():
        raise PoetError(f"{target} is a folder; name a .md file, or drop --one-file to write one file per poem")
    _check_writable(target.parent)
    atomic_write_text(target, poems_markdown(poems))
    return target


def export_markdown(poems: list[Poem], folder: Path, one_file: bool = True) -> list[Path]:
    """Write poems as Markdown into folder (one poems.md, poems-2.md beside an earlier one, …; or one file per
    poem, named by its id: the same poem's file again). Atomic per file."""
    if not poems:
        raise PoetError("no poems selected to export")
    folder = folder.expanduser()
    _check_writable(folder)
    if one_file:  # a new name beside an earlier export (poems-2.md, …): an export never replaces one
        target, n = folder / "poems.md", 1
        while target.exists():
            n += 1
            target = folder / f"poems-{n}.md"
        return [export_markdown_file(poems, target)]
    written = []
    for p in poems:
        slug = re.sub(r"[^a-z0-9]+", "-", p.title.lower()).strip("-")[:40] or "poem"
        target = folder / f"{p.id:04d}-{slug}.md"
        atomic_write_text(target, to_markdown(p))
        written.append(target)
    return written
