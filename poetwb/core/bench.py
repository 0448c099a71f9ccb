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
    from poetwb.core.train_job import target_modules, training_args

    torch.manual_seed(cfg.seed)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = new_lora(base, cfg.lora, target_modules(cfg, base.config.model_type))
    args = training_args(stage, out_dir, cfg.precision, cfg.seed, evaluate=False)
    trainer = make_trainer(model, tokenizer, args, train_ds)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return Leg(name, trainer.state.global_step, int(trainer.state.num_input_tokens_seen), seconds,
               held_out_loss(model, held_out, tokenizer.pad_token_id))


def bench_train(model: str = "bundled", poets: list[str] | None = None, budget_tokens: int = 4096,
                seed: int = 42) -> dict[str, Any]:
    from poetwb.core import data, models
    from poetwb.core.config import CorpusSpec
    from poetwb.core.hf import load_tokenizer

    model_id, path = models.resolve(model)
    tokenizer = load_tokenizer(path)
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=poems_or_default(poets)))
    split = data.split_poems_dataset(poems, seed)
    held_out = data.pack(tokenizer, split["val"], 256)
    mean_len = sum(len(tokenizer(data.poem_document(p))["input_ids"]) + 1 for p in split["train"]) / len(
        split["train"])

    report_cfg = TrainConfig(model=model, packing=False, precision="fp32", seed=seed)
    report_stage = StageConfig(batch_size=2, grad_accum=4, seq_len=512, learning_rate=1e-4,
                               max_steps=max(1, math.ceil(budget_tokens / (8 * min(mean_len, 512)))))
    ours_cfg = TrainConfig(model=model, seed=seed)
    ours_stage = StageConfig(batch_size=8, grad_accum=1, seq_len=256, learning_rate=1e-4,
                             max_steps=max(1, math.ceil(budget_tokens / (8 * 256))))
    from transformers import AutoModelForCausalLM

    base_loss = held_out_loss(AutoModelForCausalLM.from_pretrained(path), held_out, tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        a = train_leg("report recipe (padded 512, batch 2x4, fp32)", path, tokenizer, report_cfg, report_stage,
                       data.pad_each(tokenizer, split["train"], 512), held_out, Path(tmp) / "a")
        packed = data.pack(tokenizer, split["train"], 256)
        b = train_leg("poetwb default (packed 256, batch 8)", path, tokenizer, ours_cfg, ours_stage, packed,
                       held_out, Path(tmp) / "b")
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
    }


def poems_or_default(poets: list[str] | None) -> list[str]:
    return poets or ["shakespeare"]


def format_report(result: dict[str, Any]) -> str:
    lines = [f"model {result['model']} ({result['params'] / 1e6:.0f}M params), budget ~{result['budget_tokens']} "
             f"useful tokens, held-out loss before training {result['base_held_out_loss']:.3f}"]
    for leg in result["legs"]:
        lines.append(f"  {leg['name']:45} {leg['steps']:4d} steps  {leg['useful_tokens']:6d} useful tokens  "
                     f"{leg['tokens_per_s']:7.1f} useful tok/s  held-out loss {leg['held_out_loss']:.3f}")
    lines.append(f"  poetwb / report: {result['speedup']:.2f}x useful tokens/s")
    lines.append(f"  poetwb uses {result['share_of_peak'] * 100:.1f}% of this CPU's measured {result['precision']} "
                 f"matmul peak ({result['matmul_peak_gflops']:.0f} GFLOP/s; 4 x params x tokens/s)")
    return "\n".join(lines)
