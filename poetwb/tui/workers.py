"""Worker discipline in one place: no background failure vanishes.

Every pane that runs `@work(thread=True, exit_on_error=False)` workers mixes in `WorkerErrors`. A worker that ends
in Textual's ERROR state (an exception of any type that its own code did not turn into a message) becomes an error
notification naming what failed and why, and the pane's `worker_failed` takes it out of its busy state ("loading…",
a disabled Start). Workers themselves only call core and post messages or `call_from_thread` a pane method; they
never query or change widgets from their thread.
"""

from __future__ import annotations

from typing import Any

from textual.worker import Worker, WorkerState


class WorkerErrors:
    """Mixin for a widget that runs workers. `WORKER_WHAT` maps a worker group to words for the message."""

    WORKER_WHAT: dict[str, str] = {}

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        from poetwb.core.errors import first_line

        worker = event.worker
        error = worker.error
        message = first_line(error) if error is not None else "unknown error"
        what = self.WORKER_WHAT.get(worker.group, worker.name or worker.group)
        app: Any = self.app  # type: ignore[attr-defined]
        app.notify(f"{what} failed: {message}", severity="error", timeout=12)
        self.worker_failed(worker.group, message)

    def worker_failed(self, group: str, message: str) -> None:
        """Leave the busy state the failed worker's group left the pane in (override per pane)."""
