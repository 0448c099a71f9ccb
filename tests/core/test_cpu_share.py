"""A generation decodes on the CPUs other processes leave free: a thread sharing a core with a busy process stalls
its whole team at every step (core/cpu_share.py)."""

import os
import subprocess
import sys

import pytest

from poetwb.core import cpu_share, generate, models, torch_thread
from poetwb.core.config import SamplingConfig

CPUS = len(cpu_share.allowed_cpus() or ())
needs_cpus = pytest.mark.skipif(CPUS < 2 or not os.path.exists("/proc/stat"),
                                reason="needs 2 or more CPUs this process may use, and /proc/stat")


@pytest.fixture
def torch_cpu():
    """torch's own thread count here, for tests that need a decode on a CPU with 2 threads or more."""
    if models.pick_device() != "cpu":
        pytest.skip("a GPU decode has no CPU threads to fit")
    alone = cpu_share.torch_limit()
    if alone < 2:
        pytest.skip("torch runs on 1 thread here")
    return alone


@needs_cpus
def test_threads_leave_out_the_cpus_another_busy_process_holds():
    """Read from /proc/stat for real: a process spinning on one CPU is seen, and left its CPU."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert cpu_share.busy_cpus(cpu_share.allowed_cpus(), 0.3) >= 0.5
        fitted = cpu_share.free_threads()
        assert fitted.alone == CPUS and 1 <= fitted.n <= CPUS - 1 and fitted.reduced
        assert fitted.note() == f"{fitted.n}/{CPUS} threads, CPU busy"
        assert cpu_share.free_threads(limit=1) == cpu_share.Threads(1, 1)
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.parametrize("busy, limit, expected", [(0.0, None, CPUS), (0.3, None, CPUS), (CPUS, None, 1),
                                                   (1.0, 1, 1), (0.0, 1, 1)])
def test_free_threads_are_the_cpus_less_the_busy_ones_at_least_one_at_most_the_limit(monkeypatch, busy, limit,
                                                                                    expected):
    monkeypatch.setattr(cpu_share, "busy_cpus", lambda allowed, window=0.0: busy)
    if not CPUS:
        pytest.skip("this OS does not say which CPUs a process may use")
    fitted = cpu_share.free_threads(limit)
    assert fitted.n == expected and fitted.alone == min(CPUS, limit or CPUS)


@pytest.mark.parametrize("form", [None, "couplets"])
def test_a_torch_decode_beside_busy_cpus_runs_on_the_free_threads_and_gives_them_back(tiny_models, torch_cpu,
                                                                                     monkeypatch, form):
    """The OpenMP team that runs a decode shrinks while other processes keep CPUs busy, the stats (--json, footers)
    say so, the torch thread has its own count again afterwards (loading, merging), and the next generation on an
    idle machine decodes on every thread."""
    import torch

    from poetwb.core import forms

    loaded = torch_thread.call(models.load, str(tiny_models["llama"]))
    sampling = SamplingConfig(temperature=0, max_new_tokens=4)
    seen: list[int] = []  # torch's thread count inside each forward pass of the decode, on the thread that runs it
    loaded.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))

    def decode(busy: float) -> generate.RowStats:
        monkeypatch.setattr(cpu_share, "busy_cpus", lambda allowed, window=0.0: busy)
        stats: list[generate.RowStats] = []
        seen.clear()
        list(generate.runner_columns(loaded, "The sea is blue", sampling, True, stats=stats, candidates=2,
                                     form=forms.make_form(form) if form else None))
        assert seen
        return stats[0]

    shared = decode(busy=CPUS - 1)
    assert shared.threads == cpu_share.Threads(1, min(CPUS, torch_cpu)) and set(seen) == {1}
    assert shared.to_dict()["threads"] == 1 and shared.by("torch") == f"torch · 1/{shared.threads.alone} threads, " \
        "CPU busy"
    assert torch_thread.call(torch.get_num_threads) == torch_cpu
    own = decode(busy=0.0)
    assert own.threads.n == min(CPUS, torch_cpu) == own.threads.alone and set(seen) == {own.threads.n}
    assert own.by("torch") == "torch"


def test_held_out_loss_beside_busy_cpus_runs_on_the_free_threads(tiny_models, torch_cpu, monkeypatch):
    """`poetwb eval` and the Train pane's Evaluate: the forward passes of the held-out loss run on the threads other
    processes leave free, and the thread that ran them has its own count back after."""
    import torch

    from poetwb.core import evaluate

    loaded = models.load(str(tiny_models["gpt2"]))
    ids = loaded.tokenizer("The sea is blue and the sky is red")["input_ids"]

    class Rows(list):  # evaluate.dataset_loss reads ds[i:j] as columns
        def __getitem__(self, cut):
            rows = list.__getitem__(self, cut)
            return {k: [r[k] for r in rows] for k in ("input_ids", "labels")}

    seen: list[int] = []
    loaded.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(cpu_share, "busy_cpus", lambda allowed, window=0.0: CPUS - 1)
    before = torch.get_num_threads()
    loss, n = evaluate.dataset_loss(loaded.model, Rows([{"input_ids": ids, "labels": ids}] * 4),
                                    loaded.tokenizer.pad_token_id, batch_size=2)
    assert n > 0 and loss > 0
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
