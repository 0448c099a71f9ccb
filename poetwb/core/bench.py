"""`poetwb bench train`: the report's training recipe against poetwb's default, same data and token budget.

(a) the report: Trainer, batch 2, grad-acc 4, fp32, every poem padded to 512 tokens, no packing;
(b) poetwb: packed blocks, batch 8, bf16 autocast where the hardware has it natively.
Both train the same LoRA on the same training poems for about the same number of useful (non-padding) tokens,
then both adapters are scored on the same held-out blocks. Prints figures; asserts nothing.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poetwb.core.config import StageConfig, TrainConfig


@dataclass
class Leg:
    name: str
    steps: int
    useful_tokens: int
    seconds: float
    held_out_loss: float
    peak_rss_mb: float | None = None
    """Peak resident memory of the process while this leg trained (sampled; None where /proc is missing)."""
    added_rss_mb: float | None = None
    """How far the peak rose above what was resident when the leg began: the leg's own training memory."""

    @property
    def tokens_per_s(self) -> float:
        return self.useful_tokens / self.seconds if self.seconds else 0.0


def matmul_peak(dtype_name: str, n: int = 1024, reps: int = 3) -> float:
    """Measured GFLOP/s of an n x n matmul in this dtype on this machine."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class PeakMemory:
    """The process's peak resident memory during a block, sampled every 20 ms from /proc (Linux); a separate
    figure per block, unlike ru_maxrss which only grows. `start_mb` is what was resident when the block began (in a
    second leg of one process that includes the first leg's freed but kept memory), `added_mb` the peak above it."""

    def __init__(self) -> None:
        import threading

        self.peak_mb: float | None = None
        self.start_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss_mb(self) -> float | None:
        import os

        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = self._rss_mb()
            if rss is not None:
                self.peak_mb = max(self.peak_mb or 0.0, rss)

    @property
    def added_mb(self) -> float | None:
        return None if self.peak_mb is None or self.start_mb is None else self.peak_mb - self.start_mb

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self.start_mb = self._rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def held_out_loss(model: Any, blocks: Any, pad_id: int = 0, batch: int = 8) -> float:
    """Mean next-token loss over held-out blocks: the same measure `poetwb eval` reports (evaluate.dataset_loss).
    pad_id only fills rows shorter than their batch's longest (packed blocks are all full), and is masked."""
    from poetwb.core.evaluate import dataset_loss

    return dataset_loss(model, blocks, pad_id, batch)[0]


def train_leg(name: str, base_path: Path, tokenizer: Any, cfg: TrainConfig, stage: StageConfig, train_ds: Any,
               held_out: Any, out_dir: Path) -> Leg:
    import torch
    from transformers import AutoModelForCausalLM

    from poetwb.core.hf import make_trainer, new_lora
    from poetwb.core.train_job import stage_checkpointing, target_modules, training_args, use_bf16

    torch.manual_seed(cfg.seed)
    ours = cfg.packing  # the report's leg is the plain Trainer in fp32; poetwb's is what the training job runs
    weights = torch.bfloat16 if ours and use_bf16(cfg.precision) else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=weights)
    model = new_lora(base, cfg.lora, target_modules(cfg, base.config.model_type))
    args = training_args(stage, out_dir, cfg.precision, cfg.seed, evaluate=False)
    # poetwb's leg as the job runs it: lean loss and dropout, checkpointing as the run's setting decides
    trainer = make_trainer(model, tokenizer, args, train_ds, lean_loss=ours,
                           checkpointing=ours and stage_checkpointing(cfg, stage, model))
    with PeakMemory() as memory:
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return Leg(name, trainer.state.global_step, int(trainer.state.num_input_tokens_seen), seconds,
               held_out_loss(model, held_out, tokenizer.pad_token_id), memory.peak_mb, memory.added_mb)


def bench_train(model: str = "bundled", poets: list[str] | None = None, budget_tokens: int = 4096,
                seed: int = 42, profile: bool = False) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from poetwb.core import data, models
    from poetwb.core.config import CorpusSpec
    from poetwb.core.hf import load_tokenizer
    from poetwb.core.train_memory import tune_allocator

    tune_allocator()  # as the training job does: memory figures like a job's
    model_id, path = models.resolve(model)
    tokenizer = load_tokenizer(path)
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=poems_or_default(poets)))
    split = data.split_poems_dataset(poems, seed)
    held_out = data.pack(tokenizer, split["val"], 256)
    mean_len = sum(len(tokenizer(data.poem_document(p))["input_ids"]) + 1 for p in split["train"]) / len(
        split["train"])

    report_cfg = TrainConfig(model=model, packing=False, precision="fp32", seed=seed)
    recipe_tokens_per_step = 2 * 4 * min(mean_len, 512)
    report_stage = StageConfig(batch_size=2, grad_accum=4, seq_len=512, learning_rate=1e-4,
                               max_steps=max(1, math.ceil(budget_tokens / recipe_tokens_per_step)))
    ours_cfg = TrainConfig(model=model, seed=seed)
    # the same learning rate per useful token: it scales with the larger batch (the linear scaling rule)
    ours_lr = 1e-4 * (8 * 256) / recipe_tokens_per_step
    ours_stage = StageConfig(batch_size=8, grad_accum=1, seq_len=256, learning_rate=ours_lr,
                             max_steps=max(1, math.ceil(budget_tokens / (8 * 256))))
    base_loss = held_out_loss(AutoModelForCausalLM.from_pretrained(path), held_out, tokenizer.pad_token_id)
    packed = data.pack(tokenizer, split["train"], 256)
    with tempfile.TemporaryDirectory() as tmp:
        a = train_leg("report recipe (padded 512, batch 2x4, fp32)", path, tokenizer, report_cfg, report_stage,
                       data.pad_each(tokenizer, split["train"], 512), held_out, Path(tmp) / "a")
        b = train_leg(f"poetwb (packed 256, batch 8, lr {ours_lr:.1e})", path, tokenizer, ours_cfg, ours_stage,
                      packed, held_out, Path(tmp) / "b")
    from poetwb.core.train_job import use_bf16

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
    precision = "bf16" if use_bf16("auto") else "fp32"
    peak = matmul_peak(precision)
    return {
        "model": model_id, "params": params, "budget_tokens": budget_tokens, "base_held_out_loss": base_loss,
        "legs": [a.__dict__ | {"tokens_per_s": a.tokens_per_s} for a in (a, b)],
        "speedup": b.tokens_per_s / a.tokens_per_s if a.tokens_per_s else float("nan"),
        "precision": precision, "matmul_peak_gflops": peak,
        "share_of_peak": 4 * params * b.tokens_per_s / (peak * 1e9),
        "profile": profile_step(path, ours_cfg, packed) if profile else None,
    }


def profile_step(base_path: Path, cfg: TrainConfig, packed: Any, batch: int = 8, steps: int = 2) -> list[dict]:
    """Where one training step of poetwb's leg spends its time: torch's profiler over `steps` steps after a
    warm-up, the operators with the most self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    from poetwb.core import lean_activations, lean_dropout, lean_loss
    from poetwb.core.hf import new_lora
    from poetwb.core.train_job import target_modules, use_bf16

    weights = torch.bfloat16 if use_bf16(cfg.precision) else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=weights)
    model = new_lora(base, cfg.lora, target_modules(cfg, base.config.model_type))
    lean_dropout.install(model)  # as make_trainer does for poetwb's path
    lean_activations.install(model)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    backbone, head = lean_loss.parts(model) or (None, None)
    ids = torch.tensor(packed["input_ids"][:batch])

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(cfg.precision)):
            if backbone is None:
                loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = lean_loss.causal_lm_loss(backbone(input_ids=ids)[0], ids, head)
        loss.backward()
        optim.step()
        optim.zero_grad()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:12]]


def poems_or_default(poets: list[str] | None) -> list[str]:
    return poets or ["shakespeare"]


def format_report(result: dict[str, Any]) -> str:
    lines = [f"model {result['model']} ({result['params'] / 1e6:.0f}M params), budget ~{result['budget_tokens']} "
             f"useful tokens, held-out loss before training {result['base_held_out_loss']:.3f}"]
    for leg in result["legs"]:
        memory = (f"peak RSS {leg['peak_rss_mb']:.0f} MB (+{leg['added_rss_mb']:.0f} MB in training)"
                  if leg.get("peak_rss_mb") and leg.get("added_rss_mb") is not None else "")
        lines.append(f"  {leg['name']:45} {leg['steps']:4d} steps  {leg['useful_tokens']:6d} useful tokens  "
                     f"{leg['tokens_per_s']:7.1f} useful tok/s  held-out loss {leg['held_out_loss']:.3f}  {memory}")
    a, b = result["legs"]
    lines.append(f"  poetwb / report: {result['speedup']:.2f}x useful tokens/s; held-out loss "
                 f"{b['held_out_loss']:.3f} vs {a['held_out_loss']:.3f} "
                 f"({'at most' if b['held_out_loss'] <= a['held_out_loss'] else 'above'} the recipe's)")
    lines.append(f"  poetwb uses {result['share_of_peak'] * 100:.1f}% of this CPU's measured {result['precision']} "
                 f"matmul peak ({result['matmul_peak_gflops']:.0f} GFLOP/s; 4 x params x tokens/s: forward, "
                 "and a backward pass without weight gradients for the frozen base)")
    if result.get("profile"):
        lines.append("  where a training step's time goes (torch profiler, self CPU time):")
        for row in result["profile"]:
            lines.append(f"    {row['op'][:48]:48} {row['self_ms_per_step']:8.1f} ms/step {row['share']:6.1%} "
                         f"{row['calls_per_step']:7.0f} calls")
    return "\n".join(lines)
