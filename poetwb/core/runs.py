"""The run directory: the contract between a training process and everyone who watches it (TUI, CLI, scripts).

runs/<id>/config.toml, status.json (atomic), metrics.jsonl (append-only), log.txt, checkpoints/, adapters/stageN/.
A reader never needs the trainer's process: a job killed with -9 shows as `interrupted` because its pid is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poetwb.core import paths
from poetwb.core.config import TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_write_json, atomic_write_text

ACTIVE = {"queued", "running"}
CANCEL_FILE = "cancel.request"


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
    """Make runs/<id>/ with config.toml and a queued status. Refuses an id that exists."""
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
    atomic_write_text(folder / "config.toml", config.to_toml())
    atomic_write_json(folder / "status.json", {"run_id": run_id, "state": "queued", "created": now_iso(),
                                               "stage": 0, "step": 0, "total_steps": 0})
    return folder


def open_run(run_id: str) -> Path:
    folder = paths.run_dir(run_id)
    if not (folder / "status.json").is_file():
        raise PoetError(f"no run {run_id!r} in {paths.runs_dir()}; `poetwb runs` lists them")
    return folder


def read_config(folder: Path) -> TrainConfig:
    return TrainConfig.from_toml((folder / "config.toml").read_text(encoding="utf-8"))


def read_status(folder: Path) -> dict[str, Any]:
    """status.json, with `state` corrected to `interrupted` when the job's process is gone."""
    try:
        status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"run_id": folder.name, "state": "unknown"}
    local = status.get("host") in (None, socket.gethostname())
    if status.get("state") == "running" and local and not pid_alive(status.get("pid")):
        status["state"] = "interrupted"
    return status


def update_status(folder: Path, **changes: Any) -> dict[str, Any]:
    try:
        status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        status = {"run_id": folder.name}
    status.update(changes, updated=now_iso())
    atomic_write_json(folder / "status.json", status)
    return status


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
    state: str
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
        if folder.name.startswith(".") or not (folder / "status.json").is_file():
            continue
        st = read_status(folder)
        model = ""
        with contextlib.suppress(OSError, PoetError):
            model = read_config(folder).model
        out.append(RunSummary(folder.name, st.get("state", "unknown"), st.get("stage", 0), st.get("step", 0),
                              st.get("total_steps", 0), model, st.get("created", ""), st.get("error", ""),
                              st.get("eval_loss", {})))
    return out


def request_cancel(run_id: str, wait_s: float = 120.0) -> dict[str, Any]:
    """Ask a running job to stop at its next step (it saves a checkpoint); wait until it has."""
    folder = open_run(run_id)
    status = read_status(folder)
    if status["state"] not in ACTIVE:
        raise PoetError(f"run {run_id!r} is {status['state']}, not running; nothing to cancel")
    atomic_write_text(folder / CANCEL_FILE, now_iso())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = read_status(folder)
        if status["state"] not in ACTIVE:
            return status
        time.sleep(0.2)
    raise PoetError(f"run {run_id!r} did not stop within {wait_s:.0f} s; it will stop at its next step")


def _running_refusal(run_id: str, status: dict[str, Any]) -> str:
    return f"run {run_id!r} is running (pid {status.get('pid')}); cancel it first (poetwb cancel {run_id})"


def check_deletable(run_id: str) -> Path:
    """The run's folder, or a PoetError when the run does not exist or its job is running (ask before confirming)."""
    folder = open_run(run_id)
    status = read_status(folder)
    if status["state"] == "running":
        raise PoetError(_running_refusal(run_id, status))
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


def launch_detached(folder: Path) -> int:
    """Start the job for folder in its own process (own session: it outlives the CLI or TUI that started it)."""
    import subprocess
    import sys

    with open(folder / "stdout.txt", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "poetwb.core.train_job", str(folder)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    update_status(folder, pid=proc.pid, state="running", host=socket.gethostname())
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
