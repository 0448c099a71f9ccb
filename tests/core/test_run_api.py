"""The typed run API: RunState/RunStatus (unknown keys kept), start/resume/cancel eligibility in one place, a failed
launch as one line, and status.json written by the training job only (never by whoever launched it)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from poetwb.cli import main
from poetwb.core import fsutil, paths, runs
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.runs import RunState, RunStatus


def _config(tiny_gpt2, tiny_corpus) -> TrainConfig:
    return TrainConfig.from_dict({"model": str(tiny_gpt2), "corpus": {"kind": "local", "path": str(tiny_corpus)}})


def test_run_status_reads_typed_and_keeps_keys_it_does_not_know(tmp_path):
    data = {"run_id": "r", "state": "cancelled", "stage": 2, "step": 5, "pid": 7, "from_the_future": {"a": 1}}
    status = RunStatus.from_dict(data)
    assert status.state is RunState.CANCELLED and status.state.resumable and not status.active
    assert status.stage == 2 and status.extra == {"from_the_future": {"a": 1}}
    out = status.to_dict()
    assert out["from_the_future"] == {"a": 1} and out["state"] == "cancelled" and out["schema"] == 1
    assert RunStatus.from_dict({"state": "exploded"}, "x").state is RunState.UNKNOWN
    assert json.loads(json.dumps(out))["state"] == "cancelled"


def test_a_new_run_has_no_status_file_and_reads_queued(tiny_gpt2, tiny_corpus):
    folder = runs.create_run(_config(tiny_gpt2, tiny_corpus), "q")
    assert not (folder / "status.json").exists()
    status = runs.read_run_status(folder)
    assert status.state is RunState.QUEUED and status.created
    assert [r.run_id for r in runs.list_runs()] == ["q"] and runs.list_runs()[0].state is RunState.QUEUED
    runs.check_can_start()  # a queued run no process holds does not block a start
    assert runs.check_can_resume("q") == folder
    with pytest.raises(PoetError, match="queued but no job is running it; nothing to cancel"):
        runs.request_cancel("q", wait_s=5)  # at once, not after waiting


def test_resume_and_start_eligibility_live_in_core(tiny_gpt2, tiny_corpus):
    folder = runs.create_run(_config(tiny_gpt2, tiny_corpus), "e")
    runs.update_status(folder, state=RunState.RUNNING, pid=os.getpid())  # this test plays the job
    with pytest.raises(PoetError, match="already running"):
        runs.check_can_resume("e")
    with pytest.raises(PoetError, match="already running .run e, running.: wait for it or cancel it first"):
        runs.check_can_start()
    runs.update_status(folder, state=RunState.FINISHED)
    with pytest.raises(PoetError, match="already finished"):
        runs.resume_run("e")
    with pytest.raises(PoetError, match="is finished, not running; nothing to cancel"):
        runs.request_cancel("e", wait_s=0.1)


def test_a_launch_that_cannot_start_is_one_line_and_leaves_the_run_resumable(tiny_gpt2, tiny_corpus, monkeypatch,
                                                                             capsys):
    folder = runs.create_run(_config(tiny_gpt2, tiny_corpus), "nopy")
    with pytest.raises(PoetError, match="could not start the training process for run nopy .*--resume nopy"):
        runs.launch_detached(folder, python="/no/such/python")
    assert runs.read_run_status(folder).state is RunState.QUEUED and not (folder / "status.json").exists()
    monkeypatch.setattr(sys, "executable", "/no/such/python")
    cfg = Path(paths.data_dir()) / "c.toml"
    cfg.write_text(f'model = "{tiny_gpt2}"\n[corpus]\nkind = "local"\npath = "{tiny_corpus}"\n')
    assert main(["train", str(cfg), "--detach"]) == 1
    err = capsys.readouterr().err
    assert "could not start the training process" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_job_that_dies_before_it_speaks_reads_as_a_failed_launch(tiny_gpt2, tiny_corpus, wait_for):
    folder = runs.create_run(_config(tiny_gpt2, tiny_corpus), "dies")
    pid = runs.launch_detached(folder, python="/bin/false")
    wait_for(lambda: runs.read_run_status(folder).state is RunState.FAILED, timeout=20)
    status = runs.read_run_status(folder)
    assert status.cause == "launch failed" and f"pid {pid}" in status.error and "stdout.txt" in status.error
    assert not (folder / "status.json").exists()
    runs.check_can_resume("dies")  # resumable


@pytest.mark.slow
def test_status_json_is_written_only_by_the_job(tiny_train_config, monkeypatch, capsys, wait_for):
    written: list[str] = []

    def spy(original):
        def record(path, *args, **kwargs):
            written.append(Path(path).name)
            return original(path, *args, **kwargs)
        return record

    for module in (fsutil, runs):
        monkeypatch.setattr(module, "atomic_write_json", spy(fsutil.atomic_write_json))
        monkeypatch.setattr(module, "atomic_write_text", spy(fsutil.atomic_write_text))
    cfg = Path(paths.data_dir()) / "d.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(tiny_train_config("gpt2", steps1=2, steps2=1))
    assert main(["train", str(cfg), "--run-id", "d", "--detach", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    folder = paths.run_dir("d")
    assert out == {"schema": 1, "run_id": "d", "path": str(folder), "pid": out["pid"], "state": "queued"}
    wait_for(lambda: runs.read_run_status(folder).state is RunState.FINISHED)
    status = json.loads((folder / "status.json").read_text())
    assert status["pid"] == out["pid"] and status["schema"] == 1  # written by the launched job itself
    assert "status.json" not in written and {"config.toml", "launch.json"} <= set(written)
    assert main(["cancel", "d", "--json"]) == 1  # finished: nothing to cancel, one line
    assert "nothing to cancel" in capsys.readouterr().err


@pytest.mark.slow
def test_the_job_log_handler_goes_when_the_job_ends(tiny_train_config):
    from poetwb.core.train_job import run_job

    first = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=1, steps2=1)), "one")
    result = run_job(first)
    assert result.ok and result.run_id == "one" and result.state is RunState.FINISHED
    assert set(result.eval_loss) >= {"stage1_start", "stage1_end"}
    size = (first / "log.txt").stat().st_size
    assert not [h for h in logging.getLogger("poetwb").handlers if isinstance(h, logging.FileHandler)]
    second = runs.create_run(TrainConfig.from_toml(tiny_train_config("gpt2", steps1=1, steps2=1)), "two")
    assert run_job(second).ok
    assert (first / "log.txt").stat().st_size == size and (second / "log.txt").stat().st_size > 0
