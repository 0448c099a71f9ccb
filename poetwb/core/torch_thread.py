"""One long-lived thread for a process's torch work: loading models and every generation step.

Why: torch's CPU build uses GNU OpenMP, whose team of worker threads belongs to the thread that opens a parallel
region. Measured here (AMD EPYC, AVX2-only, 2 threads, bundled model, 2-row decode step): once one thread has used
OpenMP (loading the model, say), `generate` on another thread takes 165-175 ms a step against 115-145 ms on the
first one. The CLI loads on its main thread and streamed from a helper thread; the workbench loads and generates on
a new worker thread each time. Sending both to this one thread keeps every step on the team that loaded the model.

`call` runs a function there and waits; `submit` starts one and returns its Future. On the torch thread itself both
run inline (a task that waited for itself would never finish).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Future[Any]]] = \
    queue.SimpleQueue()
_ident: int | None = None
_started = False


def _serve() -> None:
    global _ident
    _ident = threading.get_ident()
    while True:
        fn, args, kwargs, future = _tasks.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)


def _start() -> None:
    """The thread, started on first use. A daemon, as the generation threads were: Ctrl-C during a load or a
    generation ends the process at once instead of waiting for the task (a pool's threads are joined at exit)."""
    global _started
    with _lock:
        if not _started:
            threading.Thread(target=_serve, name="poetwb-torch", daemon=True).start()
            _started = True


def here() -> bool:
    """Whether the calling thread is the torch thread."""
    return _ident is not None and threading.get_ident() == _ident


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) on the torch thread; its result, or its exception raised here."""
    if here():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()


def submit(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """Start fn on the torch thread (after what is already queued there) and return its Future."""
    if here():
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future
    _start()
    future = Future()
    _tasks.put((fn, args, kwargs, future))
    return future


def runs_there(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function so that every call runs on the torch thread."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return call(fn, *args, **kwargs)

    return wrapper
