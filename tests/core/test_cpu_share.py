"""A generation decodes on the CPUs other processes leave free: a thread sharing a core with a busy process stalls
its whole team at every step (core/cpu_share.py)."""

import os
import subprocess
import sys
import time

import pytest

from poetwb.core import cpu_share, generate, models, torch_thread
from poetwb.core.config import SamplingConfig

CPUS = len(cpu_share.allowed_cpus() or ())
needs_two_cpus = pytest.mark.skipif(CPUS < 2 or not os.path.exists("/proc/stat"),
                                    reason="needs 2 or more CPUs this process may use, and /proc/stat")


def busy_process() -> subprocess.Popen:
    """A process that keeps one CPU busy until killed (as a training job keeps them busy)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def until_free(alone: int, timeout: float = 10.0) -> bool:
    """Wait until nothing keeps CPUs busy any more (what a test just killed may take a moment to leave)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cpu_share.free_threads(alone).n == alone:
            return True
    return False


@needs_two_cpus
def test_threads_leave_out_the_cpus_another_busy_process_holds():
    busy = busy_process()
    try:
        assert cpu_share.busy_cpus(cpu_share.allowed_cpus(), 0.3) >= 0.5
        fitted = cpu_share.free_threads()
        assert fitted.alone == CPUS and 1 <= fitted.n <= CPUS - 1 and fitted.reduced
        assert fitted.note() == f"{fitted.n}/{CPUS} threads, CPU busy"
        assert cpu_share.free_threads(limit=1).n == 1 and not cpu_share.free_threads(limit=1).reduced
    finally:
        busy.kill()
        busy.wait()


@needs_two_cpus
@pytest.mark.parametrize("form", [None, "couplets"])
def test_a_torch_generation_beside_a_busy_process_decodes_on_fewer_threads_and_takes_them_back_after(tiny_models,
                                                                                                    form):
    """The OpenMP team that runs a decode shrinks for a generation that starts while another process is busy, the
    stats (--json, footers) say so, the torch thread has every thread again for what follows (loading, merging),
    and the next generation once the machine is free again decodes on every thread."""
    import torch

    from poetwb.core import forms

    loaded = torch_thread.call(models.load, str(tiny_models["llama"]))
    sampling = SamplingConfig(temperature=0, max_new_tokens=4)
    alone = cpu_share.torch_limit()
    if alone < 2 or alone < CPUS:
        pytest.skip("torch runs on fewer threads than this process's CPUs: one busy CPU leaves it all it uses")
    seen: list[int] = []  # torch's thread count inside each forward pass of the decode, on the thread that runs it
    loaded.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))

    def decode() -> generate.RowStats:
        stats: list[generate.RowStats] = []
        seen.clear()
        list(generate.runner_columns(loaded, "The sea is blue", sampling, True, stats=stats, candidates=2,
                                     form=forms.make_form(form) if form else None))
        assert seen
        return stats[0]

    busy = busy_process()
    try:
        shared = decode()
        assert shared.threads.reduced and set(seen) == {shared.threads.n} and shared.threads.n < alone
        assert shared.to_dict()["threads"] == shared.threads.n and shared.by("torch") == \
            f"torch · {shared.threads.n}/{alone} threads, CPU busy"
        assert torch_thread.call(torch.get_num_threads) == alone
    finally:
        busy.kill()
        busy.wait()
    assert until_free(alone), "something else keeps this machine's CPUs busy"
    own = decode()
    assert own.threads.n == alone and set(seen) == {alone} and own.by("torch") == "torch"


@needs_two_cpus
def test_held_out_loss_beside_a_busy_process_runs_on_the_free_threads(tiny_models):
    """`poetwb eval` and the Train pane's Evaluate: the forward passes of the held-out loss run on the threads
    other processes leave free, and the thread that ran them has every thread back after."""
    import torch

    from poetwb.core import evaluate

    loaded = models.load(str(tiny_models["gpt2"]))
    ids = loaded.tokenizer("The sea is blue and the sky is red")["input_ids"]
    blocks = [{"input_ids": ids, "labels": ids}] * 4

    class Rows(list):  # evaluate.dataset_loss reads ds[i:j] as columns
        def __getitem__(self, cut):
            rows = list.__getitem__(self, cut)
            return {k: [r[k] for r in rows] for k in ("input_ids", "labels")}

    alone = cpu_share.torch_limit()
    if alone < 2 or alone < CPUS:
        pytest.skip("torch runs on fewer threads than this process's CPUs: one busy CPU leaves it all it uses")
    seen: list[int] = []
    loaded.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    busy = busy_process()
    try:
        loss, n = evaluate.dataset_loss(loaded.model, Rows(blocks), loaded.tokenizer.pad_token_id, batch_size=2)
    finally:
        busy.kill()
        busy.wait()
    assert n > 0 and loss > 0
    assert seen and set(seen) == {CPUS - 1} and torch.get_num_threads() == alone
