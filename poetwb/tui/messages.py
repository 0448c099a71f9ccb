"""Messages that workers and panes post upwards (attributes down, messages up)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class ModelPicked(Message):
    """The user picked a base model in the Models pane."""

    model_id: str


@dataclass
class DataChosen(Message):
    """The Data pane's corpus and instruction choices changed (dicts shaped like CorpusSpec / InstructionSpec)."""

    corpus: dict
    instructions: dict


@dataclass
class EvalProgress(Message):
    """An evaluation worker's progress: batches (or prompts) done of total, and what it is doing; total 0 while a
    phase has no count (loading the model). A flood of these collapses to the latest."""

    done: int
    total: int
    what: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EvalProgress)


@dataclass
class EvalDone(Message):
    """An evaluation finished (result) or failed (error)."""

    result: dict | None
    error: str = ""


@dataclass
class RunsListed(Message):
    """A worker read the runs (runs.list_runs); the Train pane's table shows them. A newer list replaces an older
    one still waiting."""

    runs: list

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsListed)


@dataclass
class ExportProgress(Message):
    """An export worker's progress (done of total in the current phase, 0 total: no count) and what it is doing."""

    done: int
    total: int
    what: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ExportProgress)


@dataclass
class ExportDone(Message):
    """An export finished (result: ExportResult.to_dict()) or failed (error, one line)."""

    result: dict | None
    error: str = ""
