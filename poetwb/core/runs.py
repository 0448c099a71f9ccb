"""The run directory: the contract between a training process and everyone who watches it (TUI, CLI, scripts),
and the one typed API to start, resume and cancel a run, so no front end keeps state strings or rules of its own.

runs/<id>/config.toml, status.json (atomic), metrics.jsonl (append-only), log.txt, checkpoints/, adapters/stageN/,
launch.json (written by whoever launched a detached job: its pid, before the job has said anything).
Only the training process writes status.json; a launcher writes config.toml (create_run) and launch.json.
A reader never needs the trainer's process: a job killed with -9 shows as `interrupted` because its pid is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from poetwb.core import paths
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_write_json, atomic_write_text

CANCEL_FILE = "cancel.request"
LAUNCH_FILE = "launch.json"
STATUS_SCHEMA = 1
"""The version of status.json's keys (README "The run directory"); written as `schema`."""


class RunState(StrEnum):
    """Where a run is. A StrEnum: its values are the strings status.json and `--json` outputs carry."""

    QUEUED = "queued"
    """Created or launched; the job has not started training yet."""
    RUNNING = "running"
    """The job's process is alive and working."""
    FINISHED = "finished"
    """Every enabled stage trained and saved its adapter."""
    FAILED = "failed"
    """The job stopped on an error (status.json's error and cause say which)."""
    CANCELLED = "cancelled"
    """Stopped on request (cancel, Ctrl+C, SIGTERM); resumable from its last checkpoint."""
    INTERRUPTED = "interrupted"
    """status.json says running but the process is gone (killed, machine rebooted); resumable."""
    UNKNOWN = "unknown"
    """status.json is unreadable."""

    @property
    def active(self) -> bool:
        """A job is (about to be) working on this run."""
        return self in ACTIVE

    @property
    def resumable(self) -> bool:
        return self in {RunState.QUEUED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED}

    @classmethod
    def parse(cls, value: Any) -> RunState:
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})


@dataclass
class RunStatus:
    """status.json, typed. Keys this version does not know are kept in `extra` and written back unchanged, so a
    run written by another version still reads, and a rewrite loses nothing."""

    run_id: str
    state: RunState = RunState.QUEUED
    stage: int = 0
    """The stage training now or last (1 or 2; 0 before any)."""
    step: int = 0
    """Optimizer steps done in that stage."""
    total_steps: int = 0
    """Steps that stage will take."""
    plan: dict[str, int] = field(default_factory=dict)
    """Steps per stage ("1", "2"): estimated at first, the Trainer's exact count once a stage starts."""
    phase: str = ""
    """What the job is doing now, in words; empty when it is not running."""
    pid: int | None = None
    """The job's process id (rank 0)."""
    host: str = ""
    """The machine the job runs on (a pid means something only there)."""
    world_size: int = 1
    created: str = ""
    started: str = ""
    updated: str = ""
    finished: str = ""
    elapsed_s: float | None = None
    error: str = ""
    """One line: what went wrong (failed runs)."""
    cause: str = ""
    """bad input | out of memory | internal error (see log.txt) | cancelled | launch failed."""
    eval_loss: dict[str, float] = field(default_factory=dict)
    """Validation loss per stage: stage1_start, stage1_end, stage2_start, stage2_end."""
    model_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_id: str = "") -> RunStatus:
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["run_id"] = str(data.get("run_id") or run_id)
        kwargs["state"] = RunState.parse(data.get("state", RunState.QUEUED))
        status = cls(**kwargs)
        status.extra = {k: v for k, v in data.items() if k not in known and k != "schema"}
        return status

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["state"] = str(self.state)
        return {**self.extra, **out, "schema": STATUS_SCHEMA}

    @property
    def active(self) -> bool:
        return self.state.active


@dataclass
class Launched:
    """A job that was started: what `train --json`, `cancel --json` and the Train pane report."""

    run_id: str
    path: Path
    pid: int | None
    state: RunState

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "path": str(self.path), "pid": self.pid, "state": str(self.state)}


@dataclass
class TrainResult:
    """What a job returns to the process that ran it (the same facts are in status.json for everyone else)."""

    run_id: str
    state: RunState
    """finished, cancelled or failed."""
    error: str = ""
    cause: str = ""
    eval_loss: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == RunState.FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": str(self.state), "error": self.error, "cause": self.cause,
                "eval_loss": dict(self.eval_loss), "elapsed_s": self.elapsed_s}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed child not yet reaped) is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def new_run_id(config: TrainConfig) -> str:
    name = Path(config.model).name if config.model not in {"bundled", "default"} else "smollm2"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:24] or "model"
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"


def create_run(config: TrainConfig, run_id: str | None = None) -> Path:
    """Make runs/<id>/ with its config.toml (a run without status.json is queued). Refuses an id that exists."""
    run_id = run_id or new_run_id(config)
    folder = paths.run_dir(run_id)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
    except FileExistsError as exc:
        raise PoetError(f"run {run_id!r} already exists; resume it with --resume {run_id} or pick another id") from exc
    except OSError as exc:
        raise PoetError(
            f"the data dir {paths.data_dir()} is not writable ({exc.strerror}); "
            "set POETWB_HOME to a writable folder"
        ) from exc
    atomic_write_text(folder / "config.toml", config.to_toml())  # no status.json: only the job writes that
    return folder


def open_run(run_id: str) -> Path:
    folder = paths.run_dir(run_id)
    if not _is_run(folder):
        raise PoetError(f"no run {run_id!r} in {paths.runs_dir()}; `poetwb runs` lists them")
    return folder


def read_config(folder: Path) -> TrainConfig:
    return TrainConfig.from_toml((folder / "config.toml").read_text(encoding="utf-8"))


def _is_run(folder: Path) -> bool:
    return (folder / "config.toml").is_file() or (folder / "status.json").is_file()


def read_run_status(folder: Path) -> RunStatus:
    """status.json as the job wrote it, with two corrections a reader can make without the job: a job whose
    process is gone shows `interrupted`; a launch (launch.json) newer than anything the job wrote shows `queued`
    while its process lives, and `failed` (cause "launch failed") when it died before writing a word."""
    path = folder / "status.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written = path.stat().st_mtime_ns
    except FileNotFoundError:
        created = ""
        with contextlib.suppress(OSError):
            created = dt.datetime.fromtimestamp((folder / "config.toml").stat().st_mtime, dt.UTC).isoformat(
                timespec="seconds")
        data, written = {"run_id": folder.name, "state": RunState.QUEUED, "created": created}, 0
    except (OSError, json.JSONDecodeError, ValueError):
        return RunStatus(folder.name, RunState.UNKNOWN)
    if not isinstance(data, dict):
        return RunStatus(folder.name, RunState.UNKNOWN)
    status = RunStatus.from_dict(data, folder.name)
    here = socket.gethostname()
    local = status.host in ("", here)
    if status.state == RunState.RUNNING and local and pid_alive(status.pid):
        return status  # the job is alive and speaking for itself
    launch = _read_launch(folder)
    if launch is not None and launch.get("pid") != status.pid and launch.get("host", here) == here:
        launched_ns = int(launch.get("mtime_ns", 0))
        if launched_ns >= written:
            status.pid = launch.get("pid")
            status.host = here
            if pid_alive(status.pid):
                status.state, status.phase = RunState.QUEUED, "starting the training process"
            else:
                status.state, status.cause = RunState.FAILED, "launch failed"
                status.error = (f"the training process (pid {status.pid}) exited before it started; "
                                f"see {folder / 'stdout.txt'}")
            return status
    if status.state == RunState.RUNNING and local:
        status.state = RunState.INTERRUPTED
    return status


def read_status(folder: Path) -> dict[str, Any]:
    """read_run_status as a plain dict (what status.json holds, corrected), for code that reads keys."""
    return read_run_status(folder).to_dict()


def update_status(folder: Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write status.json. Called by the training job only (train_job.Job.status): no launcher or
    watcher writes this file, so there is never a second writer to race with."""
    try:
        status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        status = {"run_id": folder.name, "created": now_iso()}
    changes = {k: str(v) if isinstance(v, RunState) else v for k, v in changes.items()}
    status.update(changes, updated=now_iso(), schema=STATUS_SCHEMA)
    atomic_write_json(folder / "status.json", status)
    return status


def _read_launch(folder: Path) -> dict[str, Any] | None:
    path = folder / LAUNCH_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["mtime_ns"] = path.stat().st_mtime_ns
    except (OSError, json.JSONDecodeError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def append_metric(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()


def read_metrics(folder: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete metric lines from byte offset on, and the offset to continue from (a partial last line waits)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, offset + end


@dataclass
class RunSummary:
    run_id: str
    state: RunState
    stage: int
    step: int
    total_steps: int
    model: str
    created: str
    error: str
    eval_loss: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def list_runs() -> list[RunSummary]:
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if folder.name.startswith(".") or not _is_run(folder):
            continue
        st = read_status(folder)
        model = ""
        with contextlib.suppress(OSError, PoetError):
            model = read_config(folder).model
        out.append(RunSummary(folder.name, RunState.parse(st.get("state")), st.get("stage", 0), st.get("step", 0),
                              st.get("total_steps", 0), model, st.get("created", ""), st.get("error", ""),
                              st.get("eval_loss", {})))
    return out


def request_cancel(run_id: str, wait_s: float = 120.0) -> RunStatus:
    """Ask a running job to stop at its next step (it saves a checkpoint); wait until it has."""
    folder = open_run(run_id)
    status = read_run_status(folder)
    if not status.active:
        raise PoetError(f"run {run_id!r} is {status.state}, not running; nothing to cancel")
    if not is_working(status):
        raise PoetError(f"run {run_id!r} is queued but no job is running it; nothing to cancel "
                        f"(start it with `poetwb train --resume {run_id}`, or delete it)")
    atomic_write_text(folder / CANCEL_FILE, now_iso())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = read_run_status(folder)
        if not status.active:
            return status
        time.sleep(0.2)
    raise PoetError(f"run {run_id!r} did not stop within {wait_s:.0f} s; it will stop at its next step")


def is_working(status: RunStatus) -> bool:
    """A job's process is working on this run now: running, or launched and starting (a queued run that no
    process holds, e.g. one whose launch failed, is not)."""
    return status.state == RunState.RUNNING or (status.state == RunState.QUEUED and pid_alive(status.pid))


def running_run() -> RunStatus | None:
    """The run whose job is working now, if any (the workbench trains one run at a time)."""
    root = paths.runs_dir()
    if not root.is_dir():
        return None
    for folder in sorted(root.iterdir(), reverse=True):
        if not folder.name.startswith(".") and _is_run(folder):
            status = read_run_status(folder)
            if is_working(status):
                return status
    return None


def check_can_start() -> None:
    """Refuse a second job while one runs (one machine's cores or GPU are not shared well)."""
    busy = running_run()
    if busy is not None:
        raise PoetError(f"a job is already running (run {busy.run_id}, {busy.state}): wait for it or cancel it "
                        f"first (Cancel in the Train pane, or `poetwb cancel {busy.run_id}`)")


def check_can_resume(run_id: str) -> Path:
    """The run's folder when it can resume (queued, failed, cancelled, interrupted); else a PoetError saying why."""
    folder = open_run(run_id)
    status = read_run_status(folder)
    if status.state == RunState.RUNNING:
        raise PoetError(f"run {run_id!r} is already running (pid {status.pid})")
    if is_working(status):
        raise PoetError(f"run {run_id!r} is starting (pid {status.pid}); wait for it or cancel it")
    if status.state == RunState.FINISHED:
        raise PoetError(f"run {run_id!r} has already finished; start a new run instead")
    return folder


def start_run(config: TrainConfig, run_id: str | None = None, detach: bool = True) -> Launched:
    """Check the inputs, create the run and (detach) launch its job. No run exists when a check fails; a launch
    that fails leaves the run queued (resumable) and raises a one-line PoetError."""
    from poetwb.core import preflight

    preflight.check_inputs(config)  # a missing corpus is an error now, not a failed run in 15 s
    folder = create_run(config, run_id)
    if not detach:
        return Launched(folder.name, folder, None, RunState.QUEUED)
    return Launched(folder.name, folder, launch_detached(folder), RunState.QUEUED)


def resume_run(run_id: str, detach: bool = True) -> Launched:
    """Check that run_id can resume, then (detach) launch its job again from its last checkpoint."""
    folder = check_can_resume(run_id)
    read_config(folder)  # a config this version cannot read is a message now, not a failed job
    if not detach:
        return Launched(folder.name, folder, None, RunState.QUEUED)
    return Launched(folder.name, folder, launch_detached(folder), RunState.QUEUED)


def _running_refusal(run_id: str, status: dict[str, Any]) -> str:
    return (f"run {run_id!r} is running (pid {status.get('pid')}); cancel it first (Cancel in the Train pane, or "
            f"`poetwb cancel {run_id}`)")


def check_deletable(run_id: str) -> Path:
    """The run's folder, or a PoetError when the run does not exist or its job is running (ask before confirming)."""
    folder = open_run(run_id)
    status = read_run_status(folder)
    if is_working(status):
        raise PoetError(_running_refusal(run_id, status.to_dict()))
    return folder


def delete_run(run_id: str) -> None:
    """Remove a run's folder (config, metrics, checkpoints, adapters). Refused while its job runs: the job holds
    the run's lock, so a job that started a moment ago is caught even before its status says running."""
    import shutil

    from poetwb.core.fsutil import exclusive_lock

    folder = check_deletable(run_id)
    refusal = _running_refusal(run_id, read_status(folder))
    try:
        with exclusive_lock(folder / ".lock"):
            trash = folder.parent / f".deleting-{folder.name}"
            os.replace(folder, trash)  # one rename: readers never see half a run
    except BlockingIOError as exc:
        raise PoetError(refusal) from exc
    except OSError as exc:
        raise PoetError(f"could not delete run {run_id!r} ({exc.strerror or exc})") from exc
    shutil.rmtree(trash, ignore_errors=True)


def launch_detached(folder: Path, python: str | None = None) -> int:
    """Start the job for folder in its own process (own session: it outlives the CLI or TUI that started it).
    Writes launch.json (pid, host, time), never status.json: the job writes that once it runs. A launch that
    cannot start (interpreter missing, no permission, out of processes) is a one-line PoetError."""
    import subprocess
    import sys

    python = python or sys.executable
    try:
        with open(folder / "stdout.txt", "ab") as out:
            proc = subprocess.Popen([python, "-m", "poetwb.core.train_job", str(folder)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        from poetwb.core.errors import first_line

        raise PoetError(f"could not start the training process for run {folder.name} ({first_line(exc)}); "
                        f"resume it with `poetwb train --resume {folder.name}`") from exc
    atomic_write_json(folder / LAUNCH_FILE, {"pid": proc.pid, "host": socket.gethostname(),
                                             "launched": now_iso(), "python": python})
    # reap it when it ends: a TUI that started it would otherwise keep a <defunct> entry until its next launch
    threading.Thread(target=proc.wait, name=f"reap-{folder.name}", daemon=True).start()
    return proc.pid


def last_checkpoint(folder: Path, stage: int) -> Path | None:
    ckpts = folder / "checkpoints" / f"stage{stage}"
    if not ckpts.is_dir():
        return None
    done = [p for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def adapter_dir(folder: Path, stage: int) -> Path:
    return folder / "adapters" / f"stage{stage}"


def run_of_adapter(adapter: str | Path) -> Path | None:
    """The run folder an adapter folder belongs to (runs/<id>/adapters/stageN), or None for a free-standing one."""
    path = Path(adapter)
    return path.parent.parent if path.parent.name == "adapters" and (path.parent.parent / "config.toml").is_file() \
        else None


def has_adapter(folder: Path, stage: int) -> bool:
    return (adapter_dir(folder, stage) / "adapter_config.json").is_file()
