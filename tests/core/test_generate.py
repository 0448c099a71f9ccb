import pytest

from poetwb.core import generate, models
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError


@pytest.fixture(scope="module")
def gpt2(tiny_models):
    return models.load(str(tiny_models["gpt2"]))


def test_same_seed_same_poem_other_seed_other_poem(gpt2):
    a = generate.generate(gpt2, "The sea is blue", SamplingConfig(seed=3, max_new_tokens=30, temperature=1.0))
    b = generate.generate(gpt2, "The sea is blue", SamplingConfig(seed=3, max_new_tokens=30, temperature=1.0))
    c = generate.generate(gpt2, "The sea is blue", SamplingConfig(seed=4, max_new_tokens=30, temperature=1.0))
    assert a.text == b.text
    assert a.text != c.text
    assert a.new_tokens > 0


def test_streamed_chunks_add_up_to_the_whole_poem(gpt2):
    s = SamplingConfig(seed=1, max_new_tokens=25)
    chunks = list(generate.stream(gpt2, "Shall I compare thee", s))
    assert len(chunks) > 1
    assert "".join(chunks) == generate.generate(gpt2, "Shall I compare thee", s).text


def test_temperature_zero_is_greedy(gpt2):
    import torch

    s = SamplingConfig(temperature=0, max_new_tokens=20, repetition_penalty=1.0)
    ours = generate.generate(gpt2, "The sky is red", s).text
    enc = gpt2.tokenizer("The sky is red", return_tensors="pt")
    with torch.inference_mode():
        out = gpt2.model.generate(**enc, do_sample=False, max_new_tokens=20, pad_token_id=gpt2.tokenizer.pad_token_id)
    expected = gpt2.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours == expected
    assert ours == generate.generate(gpt2, "The sky is red", SamplingConfig(temperature=0, max_new_tokens=20,
                                                                             repetition_penalty=1.0, seed=9)).text


def test_instruction_mode_uses_chat_template_or_plain_format(tiny_models, gpt2):
    llama = models.load(str(tiny_models["llama"]))
    chat = generate.format_prompt(llama.tokenizer, "Write a poem about the sea", instruct=True)
    assert chat.startswith("<|im_start|>user\nWrite a poem about the sea")
    assert chat.endswith("<|im_start|>assistant\n")
    plain = generate.format_prompt(gpt2.tokenizer, "Write a poem about the sea", instruct=True)
    assert plain == "User: Write a poem about the sea\nAssistant:"
    assert generate.format_prompt(gpt2.tokenizer, "The sea", instruct=False) == "The sea"


def test_empty_prompt_is_refused(gpt2):
    with pytest.raises(PoetError, match="prompt is empty"):
        list(generate.stream(gpt2, "   ", SamplingConfig()))


def test_adapter_changes_the_output(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tiny_models["llama"]
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                                LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    s = SamplingConfig(temperature=0, max_new_tokens=20)
    base = generate.generate(models.load(str(base_dir)), "The sea", s).text
    tuned_model = models.load(str(base_dir), adapter=str(tmp_path / "adapter"))
    assert tuned_model.adapter == (tmp_path / "adapter").resolve()
    assert generate.generate(tuned_model, "The sea", s).text != base


def test_closing_the_stream_early_stops_generation(gpt2):
    it = generate.stream(gpt2, "The sea", SamplingConfig(max_new_tokens=400, seed=2))
    next(it)
    it.close()  # must return promptly and not leave a generate thread running
    import threading

    assert not [t for t in threading.enumerate() if t.name == "poetwb-generate"]


@pytest.mark.parametrize("kind,targets", [("gpt2", ["c_attn", "c_fc"]), ("llama", ["q_proj", "down_proj"])])
def test_row_mask_rows_give_each_row_exactly_its_own_model(tiny_models, tmp_path, kind, targets):
    """The lean LoRA forward used for side-by-side rows: a base row is bit-identical to the plain base model on the
    same batch, and
    a tuned row matches peft's own forward for that adapter (two adapters of different scales on the same layers,
    GPT-2's Conv1D layers included); closing it puts peft's forward back."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tiny_models[kind]
    folders = []
    for i, alpha in enumerate((16, 64)):
        torch.manual_seed(i)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4 + 4 * i, lora_alpha=alpha, target_modules=targets, init_lora_weights=False))
        m.save_pretrained(tmp_path / f"a{i}")
        folders.append(tmp_path / f"a{i}")
    loaded = models.load(str(base_dir), adapters=folders)
    plain = models.load(str(base_dir)).model
    ids = loaded.tokenizer(["The sea is blue"] * 3, return_tensors="pt").input_ids
    with torch.inference_mode():
        want = [plain(ids[:1]).logits[0]]
        plain_batch = plain(ids).logits  # the same batch shape: the same kernels, so bit for bit
        for name in ("a1", "a2"):
            loaded.model.set_adapter(name)
            want.append(loaded.model(ids[:1]).logits[0])
        mask = generate.RowMask(loaded.model, ["a1", "a2"])
        try:
            assert mask.patched and not mask.hooks
            mask.rows([None, "a1", "a2"])
            got = loaded.model(ids).logits
            mask.whole("a2")
            whole = loaded.model(ids[:1]).logits[0]
            mask.whole(None)
            none = loaded.model(ids[:1]).logits[0]
        finally:
            mask.close()
        loaded.model.set_adapter("a1")
        after = loaded.model(ids[:1]).logits[0]
    assert torch.equal(got[0], plain_batch[0]) and torch.equal(none, want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, want[2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(want[1], want[0]) and not torch.allclose(want[2], want[1])
    assert torch.equal(after, want[1])  # peft's own forward again


def test_few_row_decode_steps_match_the_plain_layers(tiny_models):
    """FewRows: a decode step of several rows gives the plain layers' logits (to float rounding), one row and the
    prompt's prefill are bit-identical, and the layers' own forward is back after the block (fp32 weights: int8
    copies take decode steps themselves)."""
    import torch

    model = models.load(str(tiny_models["llama"]), dtype="fp32").model
    ids = torch.randint(5, 60, (4, 6))
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        step = torch.randint(5, 60, (4, 1))
        want = model(input_ids=step, past_key_values=out.past_key_values).logits
        out = model(input_ids=ids, use_cache=True)
        one = model(input_ids=ids[:1]).logits
        with generate.FewRows(model) as few:
            assert few.layers
            assert torch.equal(model(input_ids=ids[:1]).logits, one)  # prefill: plain layers
            got = model(input_ids=step, past_key_values=out.past_key_values).logits
        assert not any("forward" in vars(m) for m in model.modules())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_second_generation_on_one_model_waits_for_the_one_it_replaces(tiny_models, make_run):
    """The workbench's next Generate starts while the replaced one is still stopping: the new one must not patch the
    model's layers under the old one (seen: the base column written by the adapter, then an AttributeError)."""
    import threading

    from poetwb.core import runs

    adapter = runs.adapter_dir(make_run(tiny_models["llama"], "two"), 2)
    loaded = models.load(str(tiny_models["llama"]), adapter, dtype="fp32")
    s = SamplingConfig(temperature=0, max_new_tokens=24, repetition_penalty=1.0)

    def poems(chunks) -> list[str]:
        texts = ["", ""]
        for col, chunk in chunks:
            texts[col] += chunk
        return texts

    want = poems(generate.columns(loaded, "The sea", s, [None, "default"]))
    first = generate.columns(loaded, "The sea", SamplingConfig(temperature=0, max_new_tokens=4000), [None, "default"])
    next(first)  # mid-poem
    got: dict[str, list[str]] = {}
    second = threading.Thread(target=lambda: got.update(texts=poems(
        generate.columns(loaded, "The sea", s, [None, "default"]))))
    second.start()
    second.join(1.0)
    assert second.is_alive() and not got  # waits while the first holds the model
    first.close()
    second.join(60)
    assert got["texts"] == want


def test_loading_and_generating_happen_on_the_one_torch_thread(gpt2, tiny_models):
    """GNU OpenMP's worker team belongs to the thread that first used it: poetwb loads and generates on one thread
    (core/torch_thread.py), whichever thread asks, forms included."""
    import threading

    from poetwb.core import forms, torch_thread

    seen: set[int] = set()
    loaded = models.load(str(tiny_models["gpt2"]))
    original = loaded.model.generate

    def recording(*args, **kwargs):
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    loaded.model.generate = recording
    s = SamplingConfig(max_new_tokens=6)
    generate.generate(loaded, "The sea", s)
    worker = threading.Thread(target=lambda: list(generate.columns(loaded, "The sea", s, [None, None])))
    worker.start()
    worker.join()
    list(generate.columns(loaded, "The sea", s, [None], form=forms.make_form("couplets", None, None, 1),
                          candidates=2))
    assert seen == {torch_thread.call(threading.get_ident)} and threading.get_ident() not in seen


def test_a_poem_stops_where_the_models_context_ends_and_a_prompt_that_fills_it_is_refused(gpt2):
    """The tiny GPT-2 knows 512 positions: asked for more, the poem stops there with the reason "context full"
    (past it, its position table has no row and the generation failed mid-poem with an IndexError)."""
    prompt = "The sea is blue"
    n_prompt = len(gpt2.tokenizer(prompt)["input_ids"])
    stats: list[generate.RowStats] = []
    text = "".join(generate.stream(gpt2, prompt, SamplingConfig(temperature=0, max_new_tokens=600,
                                                                repetition_penalty=1.0), stats=stats))
    assert text and stats[0].reason == "context full" and stats[0].new_tokens == 512 - n_prompt
    with pytest.raises(PoetError, match="the model's whole context is 512; shorten it"):
        list(generate.stream(gpt2, "wave " * 600, SamplingConfig(max_new_tokens=8)))
