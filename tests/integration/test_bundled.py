"""The real bundled SmolLM2: conversion once (atomic), then generation offline."""

import pytest

from poetwb.core import bundled, generate, models
from poetwb.core.config import SamplingConfig

pytestmark = pytest.mark.integration


def test_a_crash_during_conversion_leaves_nothing_that_looks_like_a_model(tmp_path, monkeypatch):
    monkeypatch.setenv("POETWB_CACHE", str(tmp_path / "cache"))
    from transformers import PreTrainedModel

    def crash(self, *args, **kwargs):
        raise MemoryError("simulated crash halfway through saving")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(MemoryError):
        bundled.ensure_converted()
    assert not bundled.is_converted()
    models_dir = tmp_path / "cache" / "models"
    assert not [p for p in models_dir.iterdir() if p.is_dir()]


def test_bundled_model_converts_once_and_generates_offline():
    folder = bundled.ensure_converted()
    assert (folder / "model.safetensors").is_file()
    loaded = models.load(None)
    assert loaded.model_id == bundled.BUNDLED_ID
    s = SamplingConfig(seed=0, max_new_tokens=24)
    first = generate.generate(loaded, "The sea is blue, the sky is red", s)
    assert len(first.text.split()) >= 3
    assert first.text == generate.generate(loaded, "The sea is blue, the sky is red", s).text
    poem = generate.generate(loaded, "Write a poem about the sea and the sky", s, instruct=True)
    assert poem.text.strip()


def test_a_request_in_raw_mode_ends_at_once_and_the_cli_says_what_to_do(capsys):
    """The bundled instruct model ends a raw "Write a poem about…" at once (a first-time user's first try): the CLI
    says to add --instruct instead of printing the prompt back in silence."""
    from poetwb.cli import main

    assert main(["generate", "-p", "Write a poem about the sea and the sky.", "-t", "0"]) == 0  # llama.cpp if there
    assert "add --instruct" in capsys.readouterr().err
    assert main(["generate", "-p", "The sea is blue, the sky is red", "-t", "0", "-n", "8"]) == 0
    assert "add --instruct" not in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["torch", "llamacpp"])
def test_a_sonnet_on_the_bundled_model_has_fourteen_rhyming_lines(capsys, engine):
    """The issue's example, through the CLI, on each engine: a raw first line, then thirteen more in ABAB CDCD EFEF
    GG."""
    from poetwb.cli import main
    from poetwb.core import forms, metrics

    if engine == "llamacpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'poetwb[llamacpp]')")
    prompt = "Shall I compare thee to a winter's night?"
    assert main(["generate", "--form", "sonnet", "-k", "4", "--seed", "3", "-p", prompt, "--engine", engine]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 14 and lines[0] == prompt
    assert out.count("\n\n") == 3  # stanza breaks after each quatrain
    report = metrics.form_report(out, forms.make_form("sonnet"))
    assert report["rhymes_held"] >= 5 and report["within_one"] >= 12, report
    assert "ABAB CDCD EFEF GG" in err


def test_the_fast_side_by_side_path_decodes_what_plain_generate_decodes(tmp_path):
    """Greedy, the bundled model: poetwb's one-pass columns (lean LoRA rows, tall output head) give the same tokens
    as transformers' own generate on the base model and on peft's model with the adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = bundled.ensure_converted()
    torch.manual_seed(0)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    for module in tuned.modules():  # a small random adapter: changes the poem, keeps it fluent
        if hasattr(module, "lora_B"):
            for b in module.lora_B.values():
                torch.nn.init.normal_(b.weight, std=0.02)
    tuned.save_pretrained(tmp_path / "adapter")
    loaded = models.load(None, adapter=tmp_path / "adapter", dtype="fp32")
    s = SamplingConfig(temperature=0, max_new_tokens=32, repetition_penalty=1.0)
    texts = ["", ""]
    for col, chunk in generate.columns(loaded, "The sea is blue, the sky is red", s, [None, "default"]):
        texts[col] += chunk
    enc = loaded.tokenizer("The sea is blue, the sky is red", return_tensors="pt")
    want = []
    with torch.inference_mode():
        with loaded.model.disable_adapter():
            want.append(loaded.model.generate(**enc, do_sample=False, max_new_tokens=32))
        want.append(loaded.model.generate(**enc, do_sample=False, max_new_tokens=32))
    n = enc["input_ids"].shape[1]
    assert texts == [loaded.tokenizer.decode(w[0, n:], skip_special_tokens=True) for w in want]
    assert texts[0] != texts[1]


def test_the_llama_cpp_engine_agrees_with_the_torch_path_on_the_first_tokens(tmp_path):
    """The bundled GGUF (Q4_1) on llama.cpp against its de-quantized fp32 copy on torch, greedy, base and a random
    adapter: the same prompt tokens through the same chat template, and the same first tokens. llama.cpp rounds the
    activations to 8 bits inside its Q4_1 products, so a near tie can later tip the other way (seen here: 'blue'
    for 'white' at the 6th token of the raw base poem, then the same words again; 'example of' for 'and' at the 14th
    of an instruction). The first 4 tokens must agree in all four poems, and the first 8 in at least three of them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import llamacpp

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'poetwb[llamacpp]')")
    folder = bundled.ensure_converted()
    torch.manual_seed(0)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    for module in tuned.modules():
        if hasattr(module, "lora_B"):
            for b in module.lora_B.values():
                torch.nn.init.normal_(b.weight, std=0.02)
    tuned.save_pretrained(tmp_path / "adapter")
    loaded = models.load(None, adapter=tmp_path / "adapter", dtype="fp32")
    engine = llamacpp.Engine.for_run("bundled", [tmp_path / "adapter"])
    request = "Write a poem about the sea and the sky"
    text = generate.format_prompt(loaded.tokenizer, request, True)
    assert generate.format_prompt(engine.template, request, True) == text
    assert engine.tokenize(text) == loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    s = SamplingConfig(temperature=0, max_new_tokens=32, repetition_penalty=1.0)
    agree: list[int] = []  # tokens until the first difference, per poem
    for prompt, instruct in (("The sea is blue, the sky is red", False), (request, True)):
        ours = ["", ""]
        for col, chunk in generate.columns(loaded, prompt, s, [None, "default"], instruct):
            ours[col] += chunk
        theirs = ["", ""]
        for col, chunk in llamacpp.columns(engine, prompt, s, [None, 0], instruct):
            theirs[col] += chunk
        for a, b in zip(ours, theirs, strict=True):
            ta, tb = loaded.tokenizer.encode(a), loaded.tokenizer.encode(b)
            same = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y),
                        min(len(ta), len(tb)))
            agree.append(same)
            assert same >= 4, (a, b)
        assert theirs[0] != theirs[1]
    assert sum(n >= 8 for n in agree) >= 3, agree
