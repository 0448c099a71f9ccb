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


def test_a_launched_job_is_reaped_when_it_ends(tmp_path):
    """The app that launched a job keeps no <defunct> process once the job ends (it was reaped only at the next
    launch)."""
    import time

    job = tmp_path / "job.sh"  # a "job" that outlives its launch by a moment, then ends
    job.write_text("#!/bin/sh\nsleep 0.5\n")
    job.chmod(0o755)
    pid = runs.launch_detached(tmp_path, python=str(job))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # succeeds on a zombie too
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} ended but was not reaped")
