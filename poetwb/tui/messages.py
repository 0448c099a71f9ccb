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
