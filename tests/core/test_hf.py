"""The shared Hugging Face plumbing (core.hf) and the one held-out loss, on a tiny real GPT-2."""

from __future__ import annotations

import math

from poetwb.core import data
from poetwb.core.bench import held_out_loss
from poetwb.core.config import CorpusSpec, LoraSettings
from poetwb.core.hf import ensure_pad, load_tokenizer, make_trainer, new_lora


def test_tokenizer_gets_a_pad_and_held_out_loss_is_the_models_own_loss(tiny_gpt2, tiny_corpus):
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(tiny_gpt2)
    tok.pad_token = None
    assert ensure_pad(tok).pad_token == tok.eos_token
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tiny_corpus)))
    blocks = data.pack(tok, poems, 32)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ours = held_out_loss(model, blocks, tok.pad_token_id, batch=3)
    with torch.inference_mode():  # the model's own mean loss over all blocks (all the same length)
        ids = torch.tensor(blocks["input_ids"])
        theirs = model(input_ids=ids, labels=ids).loss.item()
    assert math.isclose(ours, theirs, rel_tol=1e-4)


def test_a_new_lora_trains_only_its_own_weights_and_the_trainer_prints_nothing(tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainingArguments

    model = new_lora(AutoModelForCausalLM.from_pretrained(tiny_gpt2), LoraSettings(r=2, alpha=4), ["c_attn"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = make_trainer(model, load_tokenizer(tiny_gpt2), args, train_ds=[])
    assert not any(isinstance(c, PrinterCallback) for c in trainer.callback_handler.callbacks)
