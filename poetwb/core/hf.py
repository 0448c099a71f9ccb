"""Hugging Face set-up that the job, the benchmark, evaluation and the workbench share, so each decision is made
once: a tokenizer with a pad token (its EOS when it has none), a LoRA on a base model from the run's settings, and
a Trainer that reports through our callbacks only. Held-out loss lives in evaluate.dataset_loss.
(The device and bf16 choice lives in models / train_job.use_bf16.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poetwb.core import imports
from poetwb.core.config import LoraSettings


def ensure_pad(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its EOS as pad (GPT-2 and many base models ship none); padding is
    masked from every loss, so the choice changes nothing learned."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer in a model folder, with a pad token (ensure_pad)."""
    imports.ready()
    from transformers import AutoTokenizer

    return ensure_pad(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))


def new_lora(base: Any, lora: LoraSettings, targets: list[str] | str) -> Any:
    """A fresh trainable LoRA on base (peft's get_peft_model) with the run's rank, alpha and dropout."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=targets, task_type="CAUSAL_LM"))


def make_trainer(model: Any, tokenizer: Any, args: Any, train_ds: Any, eval_ds: Any = None,
                 callbacks: list[Any] | None = None, lean_loss: bool = True, checkpointing: bool | int = False) -> Any:
    """A transformers Trainer that pads batches dynamically (labels padded with -100) and prints nothing itself:
    progress goes through our callbacks (metrics.jsonl, status.json, the CLI's bar). lean_loss: the training and
    evaluation loss through the output head in chunks (core.lean_loss), without the whole batch's logits in memory,
    LoRA dropout fused into lora_A (core.lean_dropout) and the cheap element-wise activations recomputed in the
    backward pass (core.lean_activations); all keep the numbers of the plain path. checkpointing: recompute every
    decoder layer (True) or the first that many (a number) in the backward pass (core.train_memory)."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer

    from poetwb.core import lean_loss as lean
    from poetwb.core import train_memory

    if lean_loss:
        from poetwb.core import lean_activations, lean_dropout

        lean_dropout.install(model)
        lean_activations.install(model)
    if checkpointing:  # True: every decoder layer; a number: the first that many
        train_memory.enable_checkpointing(model, None if checkpointing is True else int(checkpointing))
    else:  # a base model reused from an earlier stage that checkpointed
        train_memory.disable_checkpointing(model)

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8)
    trainer_type = lean.trainer_class() if lean_loss else Trainer
    trainer = trainer_type(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                           data_collator=collator, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # our callback reports; no dicts on stdout
    return trainer
