"""Blind A/B votes: which side was which, what the voter chose, stored durably; win rates with a 95 % interval.
This is the human-feedback evaluation the report calls the most important one."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poetwb.core import paths
from poetwb.core.errors import PoetError

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    run TEXT NOT NULL,
    prompt TEXT NOT NULL,
    text_a TEXT NOT NULL,
    text_b TEXT NOT NULL,
    tuned_side TEXT NOT NULL CHECK (tuned_side IN ('A', 'B')),
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    settings TEXT NOT NULL DEFAULT '{}',
    seed INTEGER
);
"""


@dataclass
class Tally:
    run: str
    tuned: int
    base: int
    ties: int

    @property
    def votes(self) -> int:
        return self.tuned + self.base + self.ties

    @property
    def win_rate(self) -> float:
        """Tuned's share of the votes, a tie counting half."""
        return (self.tuned + 0.5 * self.ties) / self.votes if self.votes else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson 95 % interval for the win rate."""
        n = self.votes
        if not n:
            return (float("nan"), float("nan"))
        p, z = self.win_rate, 1.96
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"run": self.run, "tuned_wins": self.tuned, "base_wins": self.base, "ties": self.ties,
                "votes": self.votes, "win_rate": self.win_rate, "ci95": [lo, hi]}


class Votes:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.data_dir() / "votes.sqlite3"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.executescript(SCHEMA)
            if "seed" not in {row[1] for row in self.db.execute("PRAGMA table_info(votes)")}:
                self.db.execute("ALTER TABLE votes ADD COLUMN seed INTEGER")  # stores from before seeds were kept
                self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise PoetError(f"cannot open the vote store at {self.path} ({exc}); check POETWB_HOME") from exc

    def close(self) -> None:
        self.db.close()

    def add(self, run: str, prompt: str, text_a: str, text_b: str, tuned_side: str, choice: str,
            settings: dict[str, Any] | None = None, seed: int | None = None) -> None:
        if choice not in {"A", "B", "tie"} or tuned_side not in {"A", "B"}:
            raise PoetError(f"a vote is A, B or tie (got {choice!r})")
        with self.db:
            self.db.execute(
                "INSERT INTO votes (created, run, prompt, text_a, text_b, tuned_side, choice, settings, seed) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (dt.datetime.now().isoformat(timespec="seconds"), run, prompt, text_a, text_b, tuned_side, choice,
                 json.dumps(settings or {}, sort_keys=True), seed),
            )

    def tallies(self) -> list[Tally]:
        rows = self.db.execute("SELECT run, tuned_side, choice FROM votes").fetchall()
        out: dict[str, Tally] = {}
        for run, tuned_side, choice in rows:
            t = out.setdefault(run, Tally(run, 0, 0, 0))
            if choice == "tie":
                t.ties += 1
            elif choice == tuned_side:
                t.tuned += 1
            else:
                t.base += 1
        return sorted(out.values(), key=lambda t: t.run)

    def tally(self, run: str) -> Tally:
        return next((t for t in self.tallies() if t.run == run), Tally(run, 0, 0, 0))

    def of_run(self, run_id: str) -> list[Tally]:
        """A run's tallies against the base model, one per adapter voted on (run/stage1, run/stage2; votes cast
        before the stage was kept are under the run id alone)."""
        own = re.compile(re.escape(run_id) + r"(/stage\d+)?")  # not "run/stage2 vs other": another run lost there
        return [t for t in self.tallies() if own.fullmatch(t.run)]
