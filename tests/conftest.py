"""Shared fixtures: an isolated data dir per test, and tiny real models (GPT-2 and Llama shapes, 2 layers)
with a tokenizer trained here, so no test downloads anything."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

SHARED_CACHE = Path(os.environ.get("POETWB_TEST_CACHE", Path(__file__).resolve().parent.parent / ".poetwb-home"))

POEMS = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date.
The sea is blue, the sky is red, the gulls are crying overhead.
I wandered lonely as a cloud that floats on high o'er vales and hills,
When all at once I saw a crowd, a host, of golden daffodils.
Because I could not stop for Death, he kindly stopped for me;
The carriage held but just ourselves and Immortality.
Write a poem about the sea and the sky. User: Assistant: Sure, here's a poem about the moon.
"""

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([POEMS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def _save_tiny(folder: Path, kind: str) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = make_tokenizer(chat=kind == "llama")
    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    if kind == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=512, vocab_size=vocab,
                            bos_token_id=eos, eos_token_id=eos)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=512, vocab_size=vocab,
                             bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: _save_tiny(root / f"tiny-{kind}", kind) for kind in ("gpt2", "llama")}


@pytest.fixture(scope="session")
def torch_name() -> str:
    """What footers and --json call the torch engine under dtype auto here: int8 copies on a CPU without native
    bf16 (core/int8.py), plain torch elsewhere."""
    from poetwb.core import models

    return "torch int8" if models.resolve_dtype("auto", models.pick_device()) == "int8" else "torch"


@pytest.fixture
def tiny_gpt2(tiny_models) -> Path:
    return tiny_models["gpt2"]


@pytest.fixture
def tiny_llama(tiny_models) -> Path:
    return tiny_models["llama"]


def _make_run(base: Path, run_id: str, stages: tuple[int, ...] = (2,), targets: list[str] | None = None) -> Path:
    """A finished run folder of the tiny model `base` with real LoRA adapters (random, non-zero B, so an adapter
    changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from poetwb.core import models, runs
    from poetwb.core.config import TrainConfig

    folder = runs.create_run(TrainConfig.from_dict({"model": str(base), "corpus": {"kind": "bundled"}}), run_id)
    config = models.read_config(base)
    targets = targets or (["c_attn", "c_proj", "c_fc"] if config["model_type"] == "gpt2"
                          else ["q_proj", "k_proj", "v_proj", "o_proj"])
    for stage in stages:
        torch.manual_seed(stage)
        model = AutoModelForCausalLM.from_pretrained(base)
        lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
        lora.save_pretrained(runs.adapter_dir(folder, stage))
    runs.update_status(folder, state="finished", eval_loss={"stage2_start": 4.0, "stage2_end": 3.5})
    return folder


@pytest.fixture
def make_run():
    """make_run(base, run_id, stages=(2,), targets=None): a finished run with random LoRA adapters."""
    return _make_run


@pytest.fixture(autouse=True)
def idle_machine(request, monkeypatch):
    """Generations decode on the CPUs other processes leave free (core/cpu_share.py); every test but those of that
    module sees an idle machine, so footers, stats and timings do not depend on what else this machine runs."""
    if request.module.__name__.rsplit(".", 1)[-1] != "test_cpu_share":
        from poetwb.core import cpu_share

        monkeypatch.setattr(cpu_share, "busy_cpus", lambda allowed, window=0.0: 0.0)


@pytest.fixture(autouse=True)
def poet_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own data dir and an empty HF cache; the converted bundled model is shared."""
    home = tmp_path / "poetwb-home"
    monkeypatch.setenv("POETWB_HOME", str(home))
    monkeypatch.setenv("POETWB_CACHE", str(SHARED_CACHE / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    monkeypatch.delenv("HF_HOME", raising=False)
    return home


def place_in_hf_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay out a model folder exactly as huggingface_hub's cache does (blobs, refs/main, snapshot symlinks)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for f in source.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path):
    """A callable that puts a model folder into the test's (empty) HF cache under a repo id."""
    cache = tmp_path / "hf-cache"

    def put(repo_id: str, source: Path) -> Path:
        return place_in_hf_cache(cache, repo_id, source)

    return put


LINES = [line for line in POEMS.splitlines() if line.strip()]


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """A .txt corpus of 40 short poems (double blank lines between poems, single between stanzas)."""
    poems = []
    for i in range(40):
        n = len(LINES)
        a, b, c, d = LINES[i % n], LINES[(i + 3) % n], LINES[(i * 7 + 1) % n], LINES[(i // n + 5) % n]
        poems.append(f"{a}\n{b}\n\n{c}\n{d}")
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n\n".join(poems) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_train_config(tiny_models, tiny_corpus):
    """A callable returning a TrainConfig TOML text for a few-step run on a tiny model."""

    def make(kind: str = "gpt2", steps1: int = 6, steps2: int = 4, extra: str = "") -> str:
        return f"""
model = "{tiny_models[kind]}"
seed = 1
{extra}
[corpus]
kind = "local"
path = "{tiny_corpus}"

[instructions]
kind = "synth"

[stage1]
max_steps = {steps1}
batch_size = 4
seq_len = 64
learning_rate = 5e-3
eval_steps = 3
logging_steps = 1
save_steps = 3

[stage2]
max_steps = {steps2}
batch_size = 4
seq_len = 256
learning_rate = 5e-3
eval_steps = 2
logging_steps = 1
save_steps = 2
"""

    return make


@pytest.fixture
def wait_for():
    """Poll a predicate every 0.2 s until it holds (returns True) or the timeout ends (fails the test)."""

    def wait(predicate, timeout: float = 180.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        raise AssertionError("timed out waiting")

    return wait
