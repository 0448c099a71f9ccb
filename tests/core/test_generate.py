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
