"""The llama.cpp engine: engine choice and its one-line errors, a peft adapter written as a GGUF adapter (names,
shapes, scaling, Llama's rotary permutation), and, where llama-cpp-python is installed, greedy poems that agree with
the torch path on tiny Llama and GPT-2 models for the base and the tuned column, through the core and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poetwb.cli import main
from poetwb.core import forms, generate, llamacpp, models, runs
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.library import Library

PROMPT = "Shall I compare thee to a summer's day?"
GREEDY = SamplingConfig(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def needs_llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'poetwb[llamacpp]')")


def test_engine_choice_and_its_errors(monkeypatch):
    sonnet = forms.make_form("sonnet", None, None)
    assert llamacpp.choose("torch") == "torch" and llamacpp.choose("torch", form=sonnet) == "torch"
    with pytest.raises(PoetError, match="unknown engine 'fast'"):
        llamacpp.choose("fast")
    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    assert llamacpp.choose("auto") == "torch" and llamacpp.choose("auto", form=sonnet) == "torch"
    with pytest.raises(PoetError, match=r"not installed: pip install 'poetwb\[llamacpp\]'"):
        llamacpp.choose("llamacpp")
    monkeypatch.setattr(llamacpp, "installed", lambda: True)
    assert llamacpp.choose("auto") == "llamacpp" and llamacpp.choose("auto", form=sonnet) == "llamacpp"
    assert llamacpp.choose("llamacpp", form=sonnet) == "llamacpp"  # forms are written on both engines


def test_the_cli_refuses_an_engine_that_cannot_serve_before_loading_anything(capsys, monkeypatch):
    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    assert main(["generate", "--engine", "llamacpp", "-p", "The sea"]) == 1
    assert "the llama.cpp engine is not installed" in capsys.readouterr().err
    assert main(["compare", "--engine", "llamacpp", "--form", "sonnet", "-p", "The sea", "-a", "x"]) == 1
    assert "the llama.cpp engine is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_peft_adapter_becomes_a_gguf_adapter_with_its_scaling_in_b(kind, tiny_models, tmp_path, make_run):
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from poetwb.core.export import _permute

    base = tiny_models[kind]
    folder = make_run(base, f"a-{kind}")
    adapter = runs.adapter_dir(folder, 2)
    _, base_file = llamacpp.base_gguf(str(base), quant="f32")
    out = llamacpp.adapter_gguf(adapter, base_file)
    assert out.parent == llamacpp._cache() / "adapters" and llamacpp.adapter_gguf(adapter, base_file) == out
    reader = GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.lora.alpha"].contents() == 0.0
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    src = load_file(str(adapter / "adapter_model.safetensors"))
    scale = 8 / 4  # lora_alpha / r
    if kind == "llama":
        a = src["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"]
        b = src["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]
        assert np.array_equal(tensors["blk.1.attn_k.weight.lora_a"], a)
        np.testing.assert_allclose(tensors["blk.1.attn_k.weight.lora_b"], _permute(b * scale, 4, 2))
        assert len(tensors) == 2 * 2 * 4  # 2 layers x q, k, v, o x (a, b)
    else:
        a = src["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"]
        b = src["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
        assert tensors["blk.0.attn_qkv.weight.lora_a"].shape == a.shape == (4, 32)
        np.testing.assert_allclose(tensors["blk.0.attn_qkv.weight.lora_b"], b * scale)


def test_adapters_llama_cpp_cannot_express_are_refused_with_a_way_out(tiny_llama, tmp_path):
    meta = {"peft_type": "LORA", "use_dora": True, "r": 4, "lora_alpha": 8}
    head = {"arch": "llama", "n_layers": 2, "n_head": 4, "n_head_kv": 2}
    with pytest.raises(PoetError, match="plain LoRA adapters only.*--engine torch"):
        llamacpp.write_adapter(tmp_path / "none.safetensors", meta, head, tmp_path / "out.gguf")
    for extra in ({"modules_to_save": ["lm_head"]}, {"bias": "lora_only"}, {"lora_bias": True}):
        with pytest.raises(PoetError, match="cannot hold; use --engine torch"):  # else a different model, silently
            llamacpp.write_adapter(tmp_path / "none.safetensors", {"r": 4, **extra}, head, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_the_chat_template_renders_as_transformers_renders_it(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ours = llamacpp.GGUFTemplate(tokenizer.chat_template, {"eos_token": tokenizer.eos_token})
    for prompt in ("Write a poem about the sea", "  a {{ brace }} and\nnewline  "):
        assert generate.format_prompt(ours, prompt, True) == generate.format_prompt(tokenizer, prompt, True)


def torch_columns(base, adapter, prompt: str, instruct: bool = False) -> list[str]:
    loaded = models.load(str(base), adapter, dtype="fp32", device="cpu")
    texts = ["", ""]
    for col, chunk in generate.columns(loaded, prompt, GREEDY, [None, "default"], instruct):
        texts[col] += chunk
    return texts


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_greedy_columns_agree_with_the_torch_path(kind, tiny_models, make_run):
    needs_llama_cpp()
    base = tiny_models[kind]
    adapter = runs.adapter_dir(make_run(base, f"g-{kind}"), 2)
    _, base_file = llamacpp.base_gguf(str(base), quant="f32")
    engine = llamacpp.Engine(base_file, [llamacpp.adapter_gguf(adapter, base_file)])
    assert engine.head() == llamacpp._gguf_head(base_file)  # the fast way to the shape, and the file's own
    stats: list = []
    texts = ["", ""]
    for col, chunk in llamacpp.columns(engine, PROMPT, GREEDY, [None, 0], stats=stats):
        texts[col] += chunk
    assert texts == torch_columns(base, adapter, PROMPT)
    assert texts[0] != texts[1], "the adapter changed nothing"
    assert [s.new_tokens for s in stats] == [12, 12] and all(s.tokens_per_s > 0 for s in stats)
    # the same prompt again on the reused contexts gives the same poems; an instruction goes through the template
    again = ["", ""]
    for col, chunk in llamacpp.columns(engine, PROMPT, GREEDY, [None, 0]):
        again[col] += chunk
    assert again == texts
    if kind == "llama":
        asked = ["", ""]
        for col, chunk in llamacpp.columns(engine, "Write a poem", GREEDY, [None, 0], instruct=True):
            asked[col] += chunk
        assert asked == torch_columns(base, adapter, "Write a poem", instruct=True)


def test_cli_generate_and_compare_on_llama_cpp_report_the_engine_and_speed(tiny_llama, make_run, capsys,
                                                                           monkeypatch, tmp_path):
    needs_llama_cpp()
    monkeypatch.setenv("POETWB_CACHE", str(tmp_path / "cache"))  # a cache no other test converted this model into
    folder = make_run(tiny_llama, "cli")
    args = ["-p", PROMPT, "-t", "0", "--repetition-penalty", "1", "-n", "12", "--json"]
    assert main(["generate", "-a", folder.name, "--engine", "llamacpp", "--save", *args]) == 0
    out, err = capsys.readouterr()
    fast = json.loads(out)
    assert f"converting {tiny_llama} to GGUF for llama.cpp (once" in err  # said before the wait, and only once:
    (kept,) = Library().search()  # the library records which engine wrote a poem
    assert kept.sampling["engine"] == "llama.cpp" and kept.id == fast["saved_id"]
    assert main(["generate", "-a", folder.name, "--engine", "torch", "--dtype", "fp32", *args]) == 0  # exact
    slow = json.loads(capsys.readouterr().out)
    assert (fast["engine"], slow["engine"]) == ("llama.cpp", "torch")
    assert fast["text"] == slow["text"] and fast["new_tokens"] == 12 and fast["tokens_per_s"] > 0
    assert main(["compare", "-a", folder.name, *args]) == 0  # auto: llama.cpp where installed
    out, err = capsys.readouterr()
    both = json.loads(out)
    assert "converting" not in err
    assert both["engine"] == "llama.cpp" and both["tuned"] == fast["text"]
    assert [c["new_tokens"] for c in both["columns"]] == [12, 12]


def test_a_form_poem_takes_the_engine_auto_finds_and_the_json_says_so(tiny_llama, capsys, monkeypatch, torch_name):
    args = ["generate", "-m", str(tiny_llama), "-p", PROMPT, "--form", "couplets", "--stanzas", "1", "--json"]
    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    assert main(args) == 0
    slow = json.loads(capsys.readouterr().out)
    monkeypatch.undo()
    needs_llama_cpp()
    assert main(args) == 0
    fast = json.loads(capsys.readouterr().out)
    assert (slow["engine"], fast["engine"]) == (torch_name, "llama.cpp")
    assert fast["form"] == slow["form"] == "couplets: 2 lines, AA, 10 syllables"
    assert fast["text"].count("\n") == 2 and fast["stop_reason"] == "form complete"
    assert fast["rhymes_required"] == slow["rhymes_required"] == 1 and fast["rhymes_held"] in (0, 1)


def test_a_poem_stops_at_the_end_of_the_models_context_instead_of_aborting(tiny_gpt2):
    """GPT-2 has 512 learnt positions (the tiny one too): llama.cpp would abort the process past them."""
    needs_llama_cpp()
    _, base_file = llamacpp.base_gguf(str(tiny_gpt2), quant="f32")
    engine = llamacpp.Engine(base_file)
    stats: list = []
    long = SamplingConfig(temperature=0, max_new_tokens=600)
    text = "".join(chunk for _, chunk in engine.columns(PROMPT, long, [None], stats=stats, ignore_eos=True))
    assert stats[0].reason == "context full" and stats[0].new_tokens == 512 - len(engine.tokenize(PROMPT)) - 1
    assert text
    with pytest.raises(PoetError, match="the model's whole context is 512; shorten it"):
        list(engine.columns(PROMPT * 100, long, [None]))


def test_columns_keep_their_own_text_when_layouts_repeat_or_change(tiny_llama, make_run):
    """Two base columns are two poems from one seed (the same poem); a context reused for another adapter applies
    that adapter, not the one it had."""
    needs_llama_cpp()
    adapter = runs.adapter_dir(make_run(tiny_llama, "lay"), 2)
    _, base_file = llamacpp.base_gguf(str(tiny_llama), quant="f32")
    engine = llamacpp.Engine(base_file, [llamacpp.adapter_gguf(adapter, base_file)])

    def poems(layout):
        texts = [""] * len(layout)
        for col, chunk in llamacpp.columns(engine, PROMPT, GREEDY, layout):
            texts[col] += chunk
        return texts

    base, tuned = poems([None, 0])
    assert poems([None, None]) == [base, base]
    assert poems([0, None]) == [tuned, base]
    assert poems([0]) == [tuned]


def test_auto_falls_back_to_torch_where_llama_cpp_cannot_run_an_adapter_and_says_why(tiny_llama, tmp_path):
    needs_llama_cpp()
    odd = tmp_path / "pickled-adapter"  # an adapter without safetensors weights: llama.cpp cannot read it
    odd.mkdir()
    heard: list[PoetError] = []
    assert llamacpp.engine_for("auto", str(tiny_llama), [odd], on_fallback=heard.append) is None
    assert len(heard) == 1 and "reads only safetensors adapters" in str(heard[0])
    with pytest.raises(PoetError, match="reads only safetensors adapters"):  # asked for by name: the error stands
        llamacpp.engine_for("llamacpp", str(tiny_llama), [odd])
    assert isinstance(llamacpp.engine_for("auto", str(tiny_llama), []), llamacpp.Engine)
