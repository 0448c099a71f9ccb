"""The run directory contract beyond training: deleting a run."""

import os

import pytest

from poetwb.core import runs
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError


def test_a_running_run_cannot_be_deleted_and_a_finished_one_can(tiny_gpt2, tiny_corpus):
    config = TrainConfig.from_dict({"model": str(tiny_gpt2), "corpus": {"kind": "local", "path": str(tiny_corpus)}})
    folder = runs.create_run(config, "busy")
    runs.update_status(folder, state="running", pid=os.getpid())
    with pytest.raises(PoetError, match="is running .*cancel it first"):
        runs.delete_run("busy")
    assert folder.is_dir()
    runs.update_status(folder, state="finished")
    runs.delete_run("busy")
    assert not folder.exists() and not runs.list_runs()
