"""One account of a run's progress over both stages, read from its status.json and metrics.jsonl.

The TUI's bar, the CLI's bar and the CLI's plain lines all use it, so they agree: one step count and one ETA over
stage 1 and stage 2 together (the job writes its plan of steps per stage into status.json), and the phase the job is
in between optimizer steps ("preparing stage 2: tokenising 1,234 pairs"), which a step counter alone cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ETA_WINDOW = 20  # logged step intervals the speed is averaged over


@dataclass
class RunProgress:
    """Where a run stands, over both stages."""

    state: str
    stage: int
    step: int
    """Optimizer steps done in the current stage."""
    stage_total: int
    """Steps planned for the current stage."""
    done: int
    """Optimizer steps done over all stages."""
    total: int
    """Steps planned over all stages (0 while unknown)."""
    phase: str
    """What the job is doing now, in words (empty when it is not running)."""
    eta_s: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None

    @property
    def active(self) -> bool:
        return self.state in {"queued", "running"}

    def line(self) -> str:
        """One plain line: 'stage 1 step 3/12 · 3/22 overall · loss 3.912 · val 3.950 · 85 tok/s · ETA 2:31'."""
        parts = [f"stage {self.stage} step {self.step}/{self.stage_total or '?'}"]
        if self.total:
            parts.append(f"{self.done}/{self.total} overall")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.eval_loss is not None:
            parts.append(f"val {self.eval_loss:.3f}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.0f} tok/s")
        if self.active and self.eta_s is not None:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


def plan(status: dict[str, Any]) -> dict[int, int]:
    """Steps per stage as the job planned them (exact once a stage has started, estimated before)."""
    out = {int(k): int(v) for k, v in (status.get("plan") or {}).items()}
    stage, total = int(status.get("stage") or 0), int(status.get("total_steps") or 0)
    if stage and total:
        out[stage] = total
    return out


def seconds_per_step(records: list[dict[str, Any]], stage: int) -> float | None:
    """Wall seconds per optimizer step over the last logged intervals (evaluations included), current stage first.
    Only intervals within one job process count: a resumed job restarts its clock."""
    intervals: list[tuple[int, float, int]] = []
    prev: dict[str, Any] | None = None
    for r in records:
        if "loss" not in r or "elapsed_s" not in r:
            continue
        if prev is not None and r.get("stage") == prev.get("stage"):
            dt, ds = r["elapsed_s"] - prev["elapsed_s"], r["step"] - prev["step"]
            if dt > 0 and ds > 0:
                intervals.append((int(r.get("stage", 1)), dt, ds))
        prev = r
    chosen = [i for i in intervals if i[0] == stage][-ETA_WINDOW:] or intervals[-ETA_WINDOW:]
    if not chosen:
        return None
    return sum(i[1] for i in chosen) / sum(i[2] for i in chosen)


def summarize(status: dict[str, Any], records: list[dict[str, Any]]) -> RunProgress:
    """A run's progress from its status and all its metric records so far."""
    state = str(status.get("state", "unknown"))
    stage = int(status.get("stage") or 0)
    step = int(status.get("step") or 0)
    steps = plan(status)
    total = sum(steps.values())
    done = sum(n for s, n in steps.items() if s < stage) + min(step, steps.get(stage, step))
    if state == "finished" and total:
        done = total
    last = next((r for r in reversed(records) if "loss" in r), {})
    last_eval = next((r for r in reversed(records) if "eval_loss" in r), {})
    rate = seconds_per_step(records, stage)
    eta = max(0.0, (total - done) * rate) if rate is not None and total else None
    phase = str(status.get("phase") or "") if state in {"queued", "running"} else ""
    return RunProgress(
        state=state, stage=stage, step=step, stage_total=steps.get(stage, int(status.get("total_steps") or 0)),
        done=done, total=total, phase=phase, eta_s=eta, loss=last.get("loss"), eval_loss=last_eval.get("eval_loss"),
        tokens_per_s=last.get("tokens_per_s"),
    )


def describe_losses(eval_loss: dict[str, float], sep: str = ", ") -> str:
    """status.json's eval_loss as 'stage 1 4.855 → 4.741, stage 2 4.464 → 4.387' (val loss at start and end)."""
    return sep.join(f"stage {s} {eval_loss[f'stage{s}_start']:.3f} → {eval_loss[f'stage{s}_end']:.3f}"
                    for s in (1, 2) if f"stage{s}_start" in eval_loss and f"stage{s}_end" in eval_loss)


def format_duration(seconds: float) -> str:
    """'0:42', '12:05', '1:02:03'."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
