"""The two-stage LoRA fine-tune as a job in its own process, on transformers.Trainer.

Stage 1 adapts a LoRA to the poetry corpus (packed blocks); stage 2 continues training *the same adapter* on
(request, poem) pairs with the prompt masked. Continuing (not merging) keeps both adapters loadable on the
original base with plain peft. The job talks to the world only through its run directory (see runs.py), so it
runs the same in the foreground, detached, or under torchrun/accelerate launch. Besides step and loss it writes its
plan (steps per stage, for one progress bar over both) and its phase ("preparing stage 2: tokenising 1,234 pairs")
into status.json, so a watcher never sees a frozen "step 12/12" while the job works between steps:

    python -m poetwb.core.train_job RUN_DIR
    torchrun --nproc_per_node 2 -m poetwb.core.train_job RUN_DIR
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from poetwb.core import bundled, data, runs
from poetwb.core.config import StageConfig, TrainConfig
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_dir, exclusive_lock

log = logging.getLogger("poetwb.train")

TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "default": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def target_modules(config: TrainConfig, model_type: str) -> list[str] | str:
    """The configured modules; ["all-linear"] means every linear layer but the output head (peft's shorthand)."""
    if config.lora.target_modules == ["all-linear"]:
        return "all-linear"
    if config.lora.target_modules:
        return list(config.lora.target_modules)
    return TARGETS.get(model_type, TARGETS["default"])


# observer(status, record): called in the job's process after each status change (record None) and each metric
# record (status None); the attached CLI draws its progress from it. Watchers in other processes read the files.
Observer = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]


class Job:
    """One run: prepares data once, then trains the enabled stages that have no adapter yet."""

    def __init__(self, folder: Path, observer: Observer | None = None) -> None:
        self.folder = folder
        self.observer = observer
        self.rank, self.world_size = world()
        self.main = self.rank == 0
        self.cancelled = False
        self.started = time.monotonic()
        self.config = runs.read_config(folder)
        self.current_phase = ""
        self.plan: dict[str, int] = {}

    # --- reporting ---
    def status(self, **changes: Any) -> None:
        if self.main:
            status = runs.update_status(self.folder, **changes)
            if self.observer is not None:
                self.observer(status, None)

    def phase(self, text: str, **changes: Any) -> None:
        """Say what the job is doing now (status.json's phase), e.g. between the stages."""
        self.current_phase = text
        log.info("%s", text)
        self.status(phase=text, **changes)

    def metric(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        runs.append_metric(self.folder, record)
        if self.observer is not None:
            self.observer(None, record)

    def estimate_steps(self, s: StageConfig, examples: int) -> int:
        """Optimizer steps a stage will take (the Trainer's count replaces it once the stage starts)."""
        if s.max_steps > 0:
            return s.max_steps
        batches = math.ceil(examples / (s.batch_size * self.world_size))
        return math.ceil(s.epochs * max(batches // s.grad_accum, 1))

    def set_plan(self, stage: int, steps: int) -> None:
        self.plan[str(stage)] = int(steps)
        self.status(plan=dict(self.plan))

    def cancel_requested(self) -> bool:
        if (self.folder / runs.CANCEL_FILE).exists():
            self.cancelled = True
        return self.cancelled

    # --- the pipeline ---
    def run(self) -> runs.RunState:
        import torch

        from poetwb.core import models
        from poetwb.core.train_memory import tune_allocator

        tune_allocator()  # freed activations go back to the system between steps (README "Training memory")
        cfg = self.config
        self.status(state=runs.RunState.RUNNING, pid=os.getpid(), host=socket.gethostname(), world_size=self.world_size,
                    started=runs.now_iso(), error="", cause="", phase="starting")
        self.plan = {k: int(v) for k, v in (runs.read_status(self.folder).get("plan") or {}).items()}
        if cfg.model.strip() in bundled.BUNDLED_ALIASES and not bundled.is_converted():
            self.phase(bundled.CONVERT_NOTE)
            bundled.ensure_converted(lambda i, n, what: self.phase(f"{bundled.CONVERT_NOTE}: {what} ({i}/{n})"))
        self.phase("loading the tokenizer")
        model_id, model_path = models.resolve(cfg.model)
        from transformers import AutoModelForCausalLM

        from poetwb.core.hf import load_tokenizer

        tokenizer = load_tokenizer(model_path)
        self.phase("reading the corpus")
        poems = data.load_poems(cfg.corpus)
        poem_split = data.split_poems_dataset(poems, cfg.seed)
        log.info("corpus: %d poems (%d train / %d val)", len(poems), len(poem_split["train"]), len(poem_split["val"]))
        stage2 = cfg.stage2.enabled and cfg.instructions.kind != "none"
        pair_split = None
        if stage2:
            self.phase("reading the instructions")
            pair_split, report = data.load_pairs(cfg.instructions, poem_split, cfg.seed)
            log.info("instructions: %d pairs (%d malformed dropped)", report.pairs, report.dropped_malformed)
        self.phase("loading the model")
        torch.manual_seed(cfg.seed)
        # frozen base weights in bf16 where bf16 is native (half the memory, native matmuls); LoRA weights and
        # their optimizer state stay fp32 (peft keeps adapters in fp32). fp32 where bf16 would be emulated.
        weights = torch.bfloat16 if use_bf16(cfg.precision) else torch.float32
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=weights, use_safetensors=True)
        base.config.pad_token_id = tokenizer.pad_token_id
        targets = target_modules(cfg, base.config.model_type)
        self.status(model_id=model_id, targets=targets)
        train1 = cfg.stage1.enabled and not runs.has_adapter(self.folder, 1)
        train2 = stage2 and not runs.has_adapter(self.folder, 2)
        if train1:
            n = len(poem_split["train"])
            self.phase(f"stage 1: tokenising {n:,} poems into {cfg.stage1.seq_len}-token blocks")
            train_ds, val_ds = data.stage1_sets(tokenizer, poem_split, cfg.stage1.seq_len, cfg.packing)
            self.plan["1"] = self.estimate_steps(cfg.stage1, len(train_ds))
        elif cfg.stage1.enabled and "1" not in self.plan:  # done in an earlier process that wrote no plan
            ckpt = runs.last_checkpoint(self.folder, 1)
            self.plan["1"] = int(ckpt.name.split("-")[-1]) if ckpt else 0
        if train2:
            assert pair_split is not None
            self.plan["2"] = self.estimate_steps(cfg.stage2, len(pair_split["train"]))
        self.status(plan=dict(self.plan))
        peft_model = None
        if train1:
            peft_model = self._new_lora(base, targets)
            if not self._train(1, peft_model, tokenizer, cfg.stage1, train_ds, {"val": val_ds}):
                return runs.RunState.CANCELLED
        if train2:
            assert pair_split is not None
            if peft_model is not None:
                base = peft_model.unload()  # back to the untouched base; stage 2 reloads stage 1's saved adapter
            if runs.has_adapter(self.folder, 1):
                from peft import PeftModel

                self.phase("preparing stage 2: loading the stage-1 adapter", stage=2, step=0,
                           total_steps=self.plan.get("2", 0))
                peft_model = PeftModel.from_pretrained(base, runs.adapter_dir(self.folder, 1), is_trainable=True)
            else:
                peft_model = self._new_lora(base, targets)
            sets = self._stage2_data(tokenizer, pair_split)
            if not self._train(2, peft_model, tokenizer, cfg.stage2, sets["train"],
                               {"val": sets["val"], "test": sets["test"]}):
                return runs.RunState.CANCELLED
        self.status(state=runs.RunState.FINISHED, finished=runs.now_iso(),
                    elapsed_s=round(time.monotonic() - self.started, 1), phase="")
        return runs.RunState.FINISHED

    def _new_lora(self, base: Any, targets: list[str] | str) -> Any:
        from poetwb.core.hf import new_lora

        return new_lora(base, self.config.lora, targets)

    def _stage2_data(self, tokenizer: Any, split: dict[str, list]) -> dict[str, Any]:
        spec, seq = self.config.instructions, self.config.stage2.seq_len
        n = sum(len(rows) for rows in split.values())
        self.phase(f"preparing stage 2: tokenising {n:,} pairs", stage=2, step=0, total_steps=self.plan.get("2", 0))
        report = data.DataReport(source=spec.kind)
        out = {name: data.tokenize_pairs(tokenizer, rows, seq, spec.too_long, report) for name, rows in split.items()}
        if report.dropped_too_long or report.truncated:
            log.info("stage 2: %d pairs dropped as too long, %d truncated (seq_len %d)",
                     report.dropped_too_long, report.truncated, seq)
        if len(out["train"]) == 0:
            raise PoetError(
                f"every stage-2 example is longer than {seq} tokens ({report.dropped_too_long} dropped); "
                "raise stage2.seq_len or set instructions.too_long = 'truncate'"
            )
        self.status(stage2_data={"pairs": sum(len(v) for v in out.values()), "dropped_too_long":
                                 report.dropped_too_long, "truncated": report.truncated})
        for name in ("val", "test"):
            if len(out[name]) == 0:
                out[name] = out["train"].select(range(min(4, len(out["train"]))))
        return out

    def _train(self, stage: int, model: Any, tokenizer: Any, s: StageConfig, train_ds: Any,
               eval_sets: dict[str, Any]) -> bool:
        """Train one stage; save its adapter atomically. False when cancelled."""
        from poetwb.core.hf import make_trainer

        ckpt_dir = self.folder / "checkpoints" / f"stage{stage}"
        args = training_args(s, ckpt_dir, self.config.precision, self.config.seed, self.world_size)
        callback = _RunCallback(self, stage)
        checkpointing = stage_checkpointing(self.config, s, model)
        trainer = make_trainer(model, tokenizer, args, train_ds, eval_sets["val"], callbacks=[callback],
                               checkpointing=checkpointing)
        resume = runs.last_checkpoint(self.folder, stage)
        self.status(stage=stage, step=0 if resume is None else int(resume.name.split("-")[-1]))
        log.info("stage %d: %d train examples, resume from %s", stage, len(train_ds), resume)
        self.phase(f"stage {stage}: starting the trainer" + (f" (from step {resume.name.split('-')[-1]})"
                                                              if resume else ""))
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if callback.cancelled:
            self.status(state=runs.RunState.CANCELLED, cancelled=runs.now_iso(), phase="")
            return False
        held_out: dict[str, float] = {}  # for the adapter's provenance.json
        for name, ds in eval_sets.items():
            if name == "val":
                continue
            self.phase(f"stage {stage}: measuring {name} loss ({len(ds):,} examples)")
            metrics = trainer.evaluate(ds, metric_key_prefix=name)
            held_out[f"{name}_loss"] = metrics[f"{name}_loss"]
            self.metric({"stage": stage, "step": trainer.state.global_step, "epoch": trainer.state.epoch,
                         "total_steps": trainer.state.max_steps, f"{name}_loss": metrics[f"{name}_loss"],
                         "learning_rate": callback.learning_rate, "tokens_per_s": callback.tokens_per_s,
                         "elapsed_s": self.elapsed()})
        final = [h for h in trainer.state.log_history if "eval_loss" in h]
        if final:  # the val loss the saved adapter reached (keep_best: the best seen)
            held_out["val_loss"] = min(h["eval_loss"] for h in final) if s.keep_best else final[-1]["eval_loss"]
        if self.main:
            from poetwb.core.portable import make_portable

            self.phase(f"saving the stage-{stage} adapter")
            with atomic_dir(runs.adapter_dir(self.folder, stage)) as tmp:
                model.save_pretrained(tmp)
                make_portable(tmp, spec=self.config.model, tokenizer=tokenizer, run_id=self.folder.name,
                              stage=stage, config=self.config.to_dict(), held_out=held_out)
        if final:
            status = runs.read_status(self.folder)
            losses = dict(status.get("eval_loss", {}))
            losses[f"stage{stage}_start"] = final[0]["eval_loss"]
            # with keep_best the saved adapter is the best one seen, so that is the stage's result
            best = min(h["eval_loss"] for h in final)
            losses[f"stage{stage}_end"] = best if s.keep_best else final[-1]["eval_loss"]
            self.status(eval_loss=losses)
        return True

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)


def stage_checkpointing(config: TrainConfig, s: StageConfig, model: Any) -> int:
    """The run's gradient_checkpointing setting decided for one stage (core.train_memory): how many decoder layers
    to checkpoint (0: none), said in log.txt."""
    import torch

    from poetwb.core import train_memory

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = sum(p.numel() * p.element_size() for p in causal.parameters())
    layers, why = train_memory.decide(config.gradient_checkpointing, causal.config, s.batch_size, s.seq_len, device,
                                      weights=weights)
    log.info("%s", why)
    return layers


def use_bf16(precision: str) -> bool:
    import torch

    from poetwb.core.models import native_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def training_args(s: StageConfig, output_dir: Path, precision: str, seed: int, world_size: int = 1,
                  evaluate: bool = True) -> Any:
    """TrainingArguments for one stage: LoRA-friendly defaults, bf16 only where the hardware has it natively."""
    from transformers import TrainingArguments

    from poetwb.core.models import pick_device

    cpu = pick_device() == "cpu"  # the Trainer uses CUDA or Apple's MPS by itself when it is not told use_cpu
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.learning_rate,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        warmup_steps=s.warmup_ratio,
        weight_decay=s.weight_decay,
        lr_scheduler_type="cosine",
        logging_steps=s.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=s.eval_steps if evaluate else None,
        eval_on_start=evaluate,
        save_strategy="steps" if evaluate else "no",
        save_steps=s.save_steps,
        save_total_limit=2,  # the Trainer never rotates out the best checkpoint
        load_best_model_at_end=evaluate and s.keep_best,
        metric_for_best_model="eval_loss" if evaluate and s.keep_best else None,
        greater_is_better=False if evaluate and s.keep_best else None,
        bf16=use_bf16(precision),
        use_cpu=cpu,
        ddp_backend="gloo" if cpu and world_size > 1 else None,
        report_to="none",
        seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )


class _RunCallback(TrainerCallback):
    """Writes metrics.jsonl and status.json as the Trainer logs; stops cleanly on a cancel request."""

    def __init__(self, job: Job, stage: int) -> None:
        self.job, self.stage = job, stage
        self.cancelled = False
        self.last = (time.monotonic(), 0)
        self.learning_rate = 0.0
        self.tokens_per_s = 0.0
        self.training = f"stage {stage}: training"

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = (time.monotonic(), state.num_input_tokens_seen)
        self.job.plan[str(self.stage)] = state.max_steps  # the Trainer's exact count replaces the estimate
        first = f"stage {self.stage}: measuring val loss before training" if args.eval_on_start else self.training
        self.job.phase(first, stage=self.stage, total_steps=state.max_steps, state=runs.RunState.RUNNING,
                       plan=dict(self.job.plan))

    def on_step_end(self, args, state, control, **kwargs):
        changes: dict[str, Any] = {"step": state.global_step, "total_steps": state.max_steps}
        if self.job.current_phase != self.training:
            self.job.current_phase = changes["phase"] = self.training
        self.job.status(**changes)
        if self.job.cancel_requested():
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = True
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.job.current_phase == self.training:  # a periodic evaluation has begun
            self.job.phase(f"stage {self.stage}: measuring val loss")

    def on_evaluate(self, args, state, control, **kwargs):
        self.last = (time.monotonic(), state.num_input_tokens_seen)  # tokens/s measures training, not eval
        if self.job.current_phase.startswith(f"stage {self.stage}: measuring val loss"):
            self.job.phase(self.training)

    def on_save(self, args, state, control, **kwargs):
        self.last = (time.monotonic(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        record: dict[str, Any] = {"stage": self.stage, "step": state.global_step, "epoch": state.epoch,
                                  "total_steps": state.max_steps, "elapsed_s": self.job.elapsed()}
        if "loss" in logs:
            now, tokens = time.monotonic(), state.num_input_tokens_seen
            dt_s = now - self.last[0]
            self.learning_rate = float(logs.get("learning_rate", 0.0))
            self.tokens_per_s = round((tokens - self.last[1]) / dt_s, 1) if dt_s else 0.0
            record.update(loss=logs["loss"], learning_rate=self.learning_rate, tokens_seen=tokens,
                          tokens_per_s=self.tokens_per_s)
            if "grad_norm" in logs:
                record["grad_norm"] = float(logs["grad_norm"])
            self.last = (now, tokens)
        elif "eval_loss" in logs:  # eval events carry the latest training figures too
            record.update(eval_loss=logs["eval_loss"], learning_rate=self.learning_rate,
                          tokens_per_s=self.tokens_per_s)
        else:
            return
        self.job.metric(record)


_LOGGERS = ("poetwb", "transformers.trainer")


@contextlib.contextmanager
def _job_logging(folder: Path) -> Iterator[None]:
    """log.txt gets the details while the job runs; the handler goes when it ends, so one process running two jobs
    (tests, a notebook) never writes the second job's lines into the first job's log.txt."""
    handler = logging.FileHandler(folder / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    before = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        before.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # log.txt gets the details; the terminal gets our progress lines
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()  # "Writing model shards" bars on checkpoint saves would tear the CLI's progress bar
    try:
        yield
    finally:
        for logger, level, propagate in before:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        handler.close()


def run_job(folder: Path, observer: Observer | None = None, lock_timeout: float = 15.0) -> runs.TrainResult:
    """Run (or resume) the job in this process: the only writer of the run's status.json. Returns a TrainResult
    (finished or cancelled); a failure is written to status.json and raised as a one-line PoetError."""
    rank, _ = world()
    lock = exclusive_lock(folder / ".lock", timeout=lock_timeout) if rank == 0 else contextlib.nullcontext()
    try:
        lock.__enter__()
    except BlockingIOError as exc:
        pid = runs.read_status(folder).get("pid")
        raise PoetError(f"run {folder.name!r} is already running (pid {pid}); wait for it or cancel it") from exc
    logs = _job_logging(folder) if rank == 0 else contextlib.nullcontext()
    try:
        with logs:
            try:
                if rank == 0:
                    (folder / runs.CANCEL_FILE).unlink(missing_ok=True)
                job = Job(folder, observer=observer)
                previous = signal.signal(signal.SIGTERM, lambda *_: setattr(job, "cancelled", True)) \
                    if _main_thread() else None
                try:
                    state = job.run()
                finally:
                    if previous is not None:
                        signal.signal(signal.SIGTERM, previous)
            except BaseException as exc:
                state, message, cause = _describe_failure(exc)
                if rank == 0:
                    runs.update_status(folder, state=state, error=message, cause=cause, finished=runs.now_iso(),
                                       phase="")
                    logging.getLogger("poetwb.train").error("%s\n%s", message, traceback.format_exc())
                if isinstance(exc, PoetError | KeyboardInterrupt):
                    raise
                raise PoetError(message) from exc
        status = runs.read_run_status(folder)
        return runs.TrainResult(folder.name, state, status.error, status.cause, dict(status.eval_loss),
                                round(time.monotonic() - job.started, 1))
    finally:
        lock.__exit__(None, None, None)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _describe_failure(exc: BaseException) -> tuple[runs.RunState, str, str]:
    import torch

    from poetwb.core.errors import first_line

    failed = runs.RunState.FAILED
    if isinstance(exc, KeyboardInterrupt):
        return runs.RunState.CANCELLED, "interrupted by the user", "cancelled"
    if isinstance(exc, PoetError):
        return failed, str(exc), "bad input"
    if isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower():
        return failed, "out of memory: lower batch_size or seq_len, or pick a smaller model", "out of memory"
    return failed, first_line(exc, 300), "internal error (see log.txt)"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m poetwb.core.train_job RUN_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        result = run_job(Path(args[0]).resolve())
    except PoetError as exc:
        print(f"poetwb: error: {exc}", file=sys.stderr)
        return 1
    return 0 if result.ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
