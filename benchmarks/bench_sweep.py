"""The small sweep behind the `poet` preset: which LoRA targets and learning rate make a poet of the bundled model.

Each leg trains stage 1 (LoRA on one bundled poet's training poems, packed 256-token blocks, batch 4) for the same
number of epochs from the same seed, and measures held-out loss on the poet's validation poems every half epoch.
The table shows the best held-out loss of each leg and when it was reached, so the preset can keep the best
checkpoint rather than the last. Prints figures; asserts nothing. Losses do not depend on the machine's load;
the seconds do.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_sweep.py [--poet shakespeare] [--epochs 2] [--legs all]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

LEGS = {
    # name: (target_modules, r, learning rate)
    "all-linear r16 lr 2e-4": (["all-linear"], 16, 2e-4),
    "all-linear r16 lr 5e-4": (["all-linear"], 16, 5e-4),
    "all-linear r16 lr 1e-3": (["all-linear"], 16, 1e-3),
    "q,v r16 lr 1e-3": (None, 16, 1e-3),
}


def cpu_header() -> str:
    import torch

    flags: set[str] = set()
    name = "unknown CPU"
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        flags = set(next(line for line in info if line.startswith("flags")).split())
        name = next(line for line in info if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"CPU {name}: {' '.join(marks) or 'flags unknown'}; "
            f"torch {torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poet", default="shakespeare")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--legs", default="all", help="comma-separated leg names, or all")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, PrinterCallback, Trainer

    from poetwb.core import data, models
    from poetwb.core.bench import held_out_loss
    from poetwb.core.config import CorpusSpec, LoraSettings, StageConfig, TrainConfig
    from poetwb.core.train_job import target_modules, training_args, use_bf16

    print(cpu_header(), flush=True)
    _, path = models.resolve("bundled")
    tokenizer = AutoTokenizer.from_pretrained(path)
    poems = data.load_poems(CorpusSpec(kind="bundled", poets=[args.poet]))
    split = data.split_poems_dataset(poems, 42)
    train = data.pack(tokenizer, split["train"], 256)
    val = data.pack(tokenizer, split["val"], 256)
    batch = 4
    steps_per_epoch = max(1, len(train) // batch)
    print(f"poet {args.poet}: {len(train)} train blocks, {len(val)} val blocks of 256 tokens; {steps_per_epoch} "
          f"steps per epoch at batch {batch}; precision {'bf16' if use_bf16('auto') else 'fp32'}", flush=True)
    base_loss = held_out_loss(AutoModelForCausalLM.from_pretrained(path), val)
    print(f"base model held-out loss {base_loss:.3f}", flush=True)
    names = list(LEGS) if args.legs == "all" else [n.strip() for n in args.legs.split(",")]
    rows = []
    for name in names:
        targets, r, lr = LEGS[name]
        cfg = TrainConfig(lora=LoraSettings(r=r, alpha=2 * r, target_modules=targets), seed=42)
        stage = StageConfig(epochs=args.epochs, batch_size=batch, seq_len=256, learning_rate=lr, warmup_ratio=0.05,
                            eval_steps=max(1, steps_per_epoch // 2), save_steps=10_000, logging_steps=5)
        torch.manual_seed(42)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, task_type="CAUSAL_LM",
                                                target_modules=target_modules(cfg, base.config.model_type)))
        with tempfile.TemporaryDirectory() as tmp:
            targs = training_args(stage, Path(tmp), "auto", 42)
            targs.save_strategy = "no"
            trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=val,
                              data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                                   label_pad_token_id=-100))
            trainer.remove_callback(PrinterCallback)
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        evals = [(h["epoch"], h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h]
        best_epoch, best = min(evals, key=lambda e: e[1])
        tokens = int(trainer.state.num_input_tokens_seen)
        row = {"leg": name, "steps": trainer.state.global_step, "tokens": tokens, "seconds": round(seconds, 1),
               "tokens_per_s": round(tokens / seconds, 1), "best_loss": round(best, 4),
               "best_epoch": round(best_epoch, 2), "last_loss": round(evals[-1][1], 4),
               "curve": [(round(e, 2), round(v, 4)) for e, v in evals]}
        rows.append(row)
        print(f"{name:24} {row['steps']:4d} steps {tokens:7d} tokens {row['tokens_per_s']:6.1f} tok/s  "
              f"best held-out {best:.3f} at epoch {best_epoch:.2f}  last {evals[-1][1]:.3f}  "
              f"curve {' '.join(f'{v:.3f}' for _, v in evals)}", flush=True)
    winner = min(rows, key=lambda r: r["best_loss"])
    print(f"best: {winner['leg']} (held-out {winner['best_loss']:.3f} vs base {base_loss:.3f}, "
          f"{(winner['best_loss'] / base_loss - 1) * 100:+.1f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": cpu_header(), "base_loss": base_loss, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    sys.exit(main())
