"""Training in less memory, same numbers: fused LoRA dropout, gradient checkpointing, the lean evaluation loss."""

from __future__ import annotations

import pytest

from poetwb.core import lean_dropout, lean_loss, runs, train_memory
from poetwb.core.config import TrainConfig, build_train_config
from poetwb.core.errors import PoetError


@pytest.mark.parametrize("value", ["yes", 1, "on", None])
def test_a_bad_gradient_checkpointing_value_is_one_line(value):
    with pytest.raises(PoetError) as err:
        build_train_config("cpu-quick", overrides={"gradient_checkpointing": value})
    message = str(err.value)
    assert message.startswith('gradient_checkpointing must be "auto", true or false, got')
    assert "\n" not in message


@pytest.mark.parametrize("value", ["auto", True, False])
def test_good_gradient_checkpointing_values_round_trip_through_toml(value):
    config = build_train_config("cpu-quick", overrides={"gradient_checkpointing": value})
    assert TrainConfig.from_toml(config.to_toml()).gradient_checkpointing == value
    assert TrainConfig().gradient_checkpointing == "auto"


def test_auto_checkpoints_only_when_activations_would_take_a_large_share_of_free_memory():
    from types import SimpleNamespace

    smol = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
    estimate = train_memory.activation_bytes(smol, 4, 256)
    assert 1.2 * 2**30 < estimate < 1.6 * 2**30  # measured ~1.35 GB kept at batch 4 x 256 (README)
    assert train_memory.decide(True, smol, 4, 256)[0] is True
    assert train_memory.decide(False, smol, 4, 256, available=1)[0] is False
    on, why = train_memory.decide("auto", smol, 4, 256, available=4 * 2**30)
    assert on and "auto" in why
    assert train_memory.decide("auto", smol, 4, 256, available=64 * 2**30)[0] is False
    gpt2 = SimpleNamespace(n_embd=768, n_layer=12)  # GPT-2 names its sizes differently
    assert train_memory.activation_bytes(gpt2, 1, 100) == 100 * 12 * (10 * 768 + 4 * 3072) * 4


def _loss_and_grads(path, fuse: bool, checkpoint: bool, own_loss: bool = False):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.2, init_lora_weights=False))
    if fuse:
        assert lean_dropout.install(model) > 0
    if checkpoint:
        train_memory.enable_checkpointing(model)
    model.train()
    ids = torch.randint(5, 60, (3, 19))
    labels = ids.clone()
    labels[1, 14:] = -100
    torch.manual_seed(1)  # the same dropout masks in every way
    if own_loss:
        loss = model(input_ids=ids, labels=labels).loss
    else:
        backbone, head = lean_loss.parts(model)
        loss = lean_loss.causal_lm_loss(backbone(input_ids=ids, use_cache=False)[0], labels, head)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, model


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("own_loss", [False, True])
def test_fused_dropout_and_checkpointing_give_the_same_loss_and_lora_gradients(tiny_models, kind, own_loss):
    import torch

    ref_loss, ref_grads, _ = _loss_and_grads(tiny_models[kind], fuse=False, checkpoint=False, own_loss=own_loss)
    assert all(g.abs().sum() > 0 for g in ref_grads.values())  # every LoRA weight gets a gradient
    for fuse, checkpoint in [(True, False), (False, True), (True, True)]:
        loss, grads, model = _loss_and_grads(tiny_models[kind], fuse, checkpoint, own_loss)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=name)
        causal = model.get_base_model()
        assert causal.is_activation_checkpointing is checkpoint
        train_memory.disable_checkpointing(model)
        assert not causal.is_activation_checkpointing


def test_fused_dropout_keeps_the_adapter_and_undoes_cleanly(tiny_models):
    import torch
    from peft import get_peft_model_state_dict

    _, _, model = _loss_and_grads(tiny_models["llama"], fuse=False, checkpoint=False)
    before = get_peft_model_state_dict(model)
    n = lean_dropout.install(model)
    assert n == 14  # 7 linear layers x 2 decoder layers
    after = get_peft_model_state_dict(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.eval()  # no dropout when evaluating: the fused layer is a plain linear layer then
    ids = torch.randint(5, 60, (2, 9))
    with torch.no_grad():
        fused_logits = model(input_ids=ids).logits
        assert lean_dropout.uninstall(model) == n
        plain_logits = model(input_ids=ids).logits
    torch.testing.assert_close(fused_logits, plain_logits)
    assert not any(type(m) is lean_dropout.DropoutLinear for m in model.modules())


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_lean_evaluation_loss_equals_the_trainers_own(tiny_models, tiny_corpus, tmp_path, kind, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import data
    from poetwb.core.config import CorpusSpec, StageConfig
    from poetwb.core.hf import load_tokenizer, make_trainer
    from poetwb.core.train_job import training_args

    tokenizer = load_tokenizer(tiny_models[kind])
    poems = data.load_poems(CorpusSpec(kind="local", path=str(tiny_corpus)))
    blocks = data.pad_each(tokenizer, poems.select(range(10)), 48)  # padded rows: the masked positions must not count
    calls = []
    chunked = lean_loss.causal_lm_loss
    monkeypatch.setattr(lean_loss, "causal_lm_loss", lambda *a, **k: calls.append(1) or chunked(*a, **k))
    losses = []
    for lean in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_models[kind]),
                               LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        args = training_args(StageConfig(batch_size=4, max_steps=1), tmp_path / f"out{lean}", "fp32", 1,
                             evaluate=False)
        trainer = make_trainer(model, tokenizer, args, blocks, blocks, lean_loss=lean)
        losses.append(trainer.evaluate()["eval_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert len(calls) == 3  # the lean run's three batches went through the chunked loss, the plain run's none


def test_a_short_run_with_checkpointing_on_finishes_and_says_so(tiny_train_config):
    from poetwb.core.train_job import run_job

    text = tiny_train_config("llama", steps1=3, steps2=2, extra="gradient_checkpointing = true")
    folder = runs.create_run(TrainConfig.from_toml(text), "ckpt")
    result = run_job(folder)
    assert result.state == "finished"
    assert runs.has_adapter(folder, 1) and runs.has_adapter(folder, 2)
    log = (folder / "log.txt").read_text(encoding="utf-8")
    assert log.count("gradient checkpointing on (set in the config)") == 2  # both stages
    assert result.eval_loss["stage1_end"] < result.eval_loss["stage1_start"]


@pytest.mark.parametrize(("flag", "value"), [("on", True), ("off", False), ("auto", "auto")])
def test_the_cli_flag_overrides_the_file_and_the_preset(tmp_path, flag, value):
    from poetwb.cli import _train_config, build_parser

    file = tmp_path / "c.toml"
    file.write_text("gradient_checkpointing = false\n", encoding="utf-8")
    args = build_parser().parse_args(["train", str(file), "--preset", "poet", "--gradient-checkpointing", flag])
    assert _train_config(args).gradient_checkpointing == value
    args = build_parser().parse_args(["train", str(file)])
    assert _train_config(args).gradient_checkpointing is False


def test_a_bad_value_in_a_config_file_is_one_line_on_the_cli(tmp_path, capsys):
    from poetwb.cli import main

    file = tmp_path / "c.toml"
    file.write_text('gradient_checkpointing = "sometimes"\n', encoding="utf-8")
    assert main(["train", str(file)]) == 1
    err = capsys.readouterr().err
    assert 'gradient_checkpointing must be "auto", true or false' in err and err.count("\n") == 1


def test_the_allocator_setting_applies_on_glibc():
    import platform

    assert train_memory.tune_allocator() is (platform.libc_ver()[0] == "glibc")
