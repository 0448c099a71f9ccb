"""Taking a poet out of poetwb: a run's adapter merged into its base and written as a plain Hugging Face folder, a
GGUF file (llama.cpp, LM Studio) or an Ollama model folder, without a UI.

- hf: peft's merge_and_unload, saved as safetensors with the tokenizer, a generation_config.json carrying poetwb's
  sampling defaults and a model card (README.md) with the run's config, data, held-out losses and a sample poem.
- gguf: the merged weights written with the `gguf` package (GGUFWriter, its HF -> GGUF tensor-name map, SpecialVocab
  for merges and special tokens), for the Llama-shaped and GPT-2-shaped models the catalogue offers. Llama q/k
  weights get llama.cpp's rotary permutation (its convert_hf_to_gguf.py does the same); GPT-2's Conv1D weights are
  transposed to (out, in). The tokenizer (byte-level BPE tokens, merges, special ids) and a chat template go into
  the metadata: a model without one gets the plain "User: … Assistant:" template stage 2 trained on.
- ollama: the GGUF plus a Modelfile whose TEMPLATE reproduces the exact prompt stage 2 trained on.

Every export is written into a temp folder beside the target and renamed into place at the end, so a crash leaves
nothing that looks complete; an existing target is replaced only with force; free disk space is checked first.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from poetwb.core import bundled, imports, paths, runs
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_dir

FORMATS = ("hf", "gguf", "ollama")
GGUF_QUANTS = ("f16", "bf16", "q8_0")
HF_DTYPES = ("f32", "f16", "bf16")
GGUF_ARCHS = ("llama", "gpt2")
"""model_type values the GGUF writer handles: Llama-shaped (Llama, SmolLM2, DeepSeek-Coder) and GPT-2."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, what): total 0 while a phase has no count."""

PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}{{ eos_token }}\n"
    "{% else %}{{ message['content'] }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""The plain instruction format (generate.PLAIN_INSTRUCTION) as a chat template: for one user message it renders
exactly 'User: {prompt}\\nAssistant:', the prompt stage 2 trains on when the base has no chat template."""

SAMPLE_REQUEST = "Write a poem about the sea at night."
SAMPLE_FIRST_LINE = "The sea at night"

# llama.cpp names the pre-tokenizer of a byte-level BPE vocabulary by hashing the ids its tokenizer gives this
# text (convert_hf_to_gguf.py, get_vocab_base_pre); the entries for the catalogue's vocabularies.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= "
    "нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_KNOWN_PRE = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}


@dataclass
class ExportResult:
    """What an export wrote, for the CLI, the TUI and scripts."""

    path: Path
    format: str
    quant: str
    run_id: str
    stage: int
    seconds: float
    files: dict[str, int] = field(default_factory=dict)
    """File name (relative to path) -> bytes."""
    commands: list[str] = field(default_factory=list)
    """Commands to run the export (ollama: create and run)."""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["total_bytes"] = self.total_bytes
        return out


# --- checks before anything heavy ---------------------------------------------------------------------------------


def pick_stage(folder: Path, stage: int | None) -> int:
    """The stage to export: the one asked for, else the newest with an adapter (2, then 1)."""
    if stage is not None:
        if stage not in (1, 2):
            raise PoetError(f"--stage must be 1 or 2, got {stage}")
        if not runs.has_adapter(folder, stage):
            raise PoetError(f"run {folder.name!r} has no stage-{stage} adapter yet; "
                            "wait for the stage to finish, or export the other stage")
        return stage
    for s in (2, 1):
        if runs.has_adapter(folder, s):
            return s
    raise PoetError(f"run {folder.name!r} has no adapters yet; wait for a stage to finish or resume it")


def check_format(fmt: str, quant: str | None) -> str:
    """The quantization to use (f32 for hf, f16 for GGUF unless asked), or a one-line error."""
    if fmt not in FORMATS:
        raise PoetError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "hf":
        quant = quant or "f32"
        if quant not in HF_DTYPES:
            raise PoetError(f"--quant {quant} is a GGUF type; the hf format saves {', '.join(HF_DTYPES)} "
                            "weights (default f32, exact)")
        return quant
    quant = quant or "f16"
    if quant not in GGUF_QUANTS:
        raise PoetError(f"--quant must be one of {', '.join(GGUF_QUANTS)} for {fmt}, got {quant!r}")
    return quant


def check_target(output: str | Path, force: bool) -> Path:
    """The output folder, resolved; refuses an existing one without force, and folders that hold poetwb's data."""
    target = Path(output).expanduser().resolve()
    data = paths.data_dir().resolve()
    if target in (Path(target.anchor), Path.home().resolve()) or data == target or data.is_relative_to(target):
        raise PoetError(f"refusing to export into {target}: it holds other files (or poetwb's data); "
                        "give a new folder such as ./my-poet")
    if target.exists():
        if not target.is_dir():
            raise PoetError(f"{target} is a file; give a folder to export into")
        if not force:
            raise PoetError(f"{target} already exists; pass --force to replace it, or pick another -o folder")
    return target


def estimate_bytes(params: int, fmt: str, quant: str) -> int:
    """Bytes the export will take: parameters x bytes per parameter, plus tokenizer and card."""
    per = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}[quant]
    return int(params * per) + 32 * 2**20


def check_disk(target: Path, needed: int) -> None:
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < needed * 1.1:
        raise PoetError(f"not enough disk space in {parent}: the export needs about {needed / 2**20:,.0f} MiB, "
                        f"{free / 2**20:,.0f} MiB are free; free some space or pick another -o folder")


# --- the export -------------------------------------------------------------------------------------------------


def export_run(run_id: str, fmt: str, output: str | Path, *, stage: int | None = None, quant: str | None = None,
               force: bool = False, progress: Progress | None = None, sample_tokens: int = 96) -> ExportResult:
    """Merge a run's adapter into its base and write it as fmt (hf | gguf | ollama) into the folder output.

    sample_tokens: length of the sample poem in the model card (0: none). Runs on the torch threads other processes
    leave free (core/cpu_share.py), set on the calling thread: a worker thread would otherwise start from whatever
    count a decode had set at that moment."""
    from poetwb.core import cpu_share

    with cpu_share.torch_threads(cpu_share.free_torch_threads()):
        return _export_run(run_id, fmt, output, stage=stage, quant=quant, force=force, progress=progress,
                           sample_tokens=sample_tokens)


def _export_run(run_id: str, fmt: str, output: str | Path, *, stage: int | None, quant: str | None, force: bool,
                progress: Progress | None, sample_tokens: int) -> ExportResult:
    from poetwb.core import models

    started = time.monotonic()
    report = progress or (lambda *_: None)
    quant = check_format(fmt, quant)
    folder = runs.open_run(run_id)
    stage = pick_stage(folder, stage)
    target = check_target(output, force)
    config = runs.read_config(folder)
    if config.model.strip() in bundled.BUNDLED_ALIASES and not bundled.is_converted():
        bundled.ensure_converted(lambda i, n, what: report(i, n, f"{bundled.CONVERT_NOTE}: {what}"))
    _, base_folder = models.resolve(config.model, download=False)
    base_config = models.read_config(base_folder)
    model_type = str(base_config.get("model_type"))
    if fmt != "hf" and model_type not in GGUF_ARCHS:
        raise PoetError(f"GGUF export does not support the {model_type} architecture "
                        f"({', '.join(base_config.get('architectures') or [])}); supported: Llama-shaped and "
                        "GPT-2 models. Use --format hf")
    if fmt != "hf":  # a tokenizer GGUF cannot describe is said before the weights load
        imports.ready()
        from transformers import AutoTokenizer

        check_tokenizer(AutoTokenizer.from_pretrained(base_folder))
    check_disk(target, estimate_bytes(models.shape_from_config(base_config).params, fmt, quant))

    report(0, 0, "loading the base model and the adapter")
    loaded = models.load(config.model, runs.adapter_dir(folder, stage), dtype="fp32", device="cpu")
    report(0, 0, "merging the adapter into the base")
    merged = loaded.model.merge_and_unload()
    merged.eval()
    tokenizer = loaded.tokenizer
    template_added = ensure_chat_template(tokenizer)
    if sample_tokens:
        report(0, 0, "writing a sample poem for the model card")
    sample = sample_poem(merged, tokenizer, stage, sample_tokens) if sample_tokens else None
    notes: list[str] = []
    if template_added:
        notes.append("the base has no chat template: the plain 'User: … Assistant:' template stage 2 trained on "
                     "was added")
    commands: list[str] = []
    gguf_name = ""
    with atomic_dir(target) as tmp:
        if fmt == "hf":
            report(0, 0, f"saving the merged model ({quant}) as safetensors")
            write_hf(merged, tokenizer, tmp, quant)
        else:
            name = gguf_name = f"{_slug(folder.name)}-stage{stage}-{quant}.gguf"
            notes += write_gguf(merged, tokenizer, tmp / name, quant, config.model, folder.name, stage, report)
            if fmt == "ollama":
                model_name = f"poetwb-{_slug(folder.name)}-s{stage}"
                (tmp / "Modelfile").write_text(modelfile(name, tokenizer, stage, folder.name), encoding="utf-8")
                modelfile_path = shlex.quote(str(target / "Modelfile"))
                commands = [f"ollama create {model_name} -f {modelfile_path}", f"ollama run {model_name}"]
        report(0, 0, "writing the model card")
        (tmp / "README.md").write_text(model_card(folder, stage, fmt, quant, tokenizer, sample, template_added,
                                                  commands, gguf_name), encoding="utf-8")
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    report(1, 1, "done")
    return ExportResult(target, fmt, quant, folder.name, stage, round(time.monotonic() - started, 2), files,
                        commands, notes)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-") or "poet"


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the plain instruction template; True when it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    return True


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def sample_poem(model: Any, tokenizer: Any, stage: int, max_new_tokens: int) -> dict[str, str]:
    """One poem from the merged model with poetwb's sampling defaults (seed 0), for the model card."""
    import torch

    from poetwb.core.generate import format_prompt, generate_kwargs

    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    instruct = stage == 2
    prompt = SAMPLE_REQUEST if instruct else SAMPLE_FIRST_LINE
    text = format_prompt(tokenizer, prompt, instruct)
    bos = getattr(tokenizer, "bos_token", None)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not (bos and text.startswith(bos)))
    torch.manual_seed(sampling.seed)
    with torch.no_grad():
        out = model.generate(**inputs, **generate_kwargs(tokenizer, model, sampling))
    new = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    poem = new.strip("\n") if instruct else prompt + new
    return {"prompt": prompt, "mode": "instruct" if instruct else "raw", "text": poem.strip() or "(empty)"}


def generation_config(tokenizer: Any, model: Any) -> Any:
    """poetwb's sampling defaults (temperature 0.7, top-p 0.95, repetition penalty 1.1) as a GenerationConfig."""
    from transformers import GenerationConfig

    d = SamplingConfig()
    return GenerationConfig(
        do_sample=True, temperature=d.temperature, top_p=d.top_p, top_k=d.top_k,
        repetition_penalty=d.repetition_penalty, max_new_tokens=d.max_new_tokens,
        bos_token_id=getattr(model.config, "bos_token_id", None), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def write_hf(model: Any, tokenizer: Any, folder: Path, quant: str) -> None:
    import torch

    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[quant]
    model.to(dtype=dtype)
    model.generation_config = generation_config(tokenizer, model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


# --- GGUF ---------------------------------------------------------------------------------------------------------


def _permute(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """HF's rotate-half q/k rows into the interleaved order llama.cpp's rope expects (as convert_hf_to_gguf.py)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(array: Any, quant: str) -> tuple[Any, Any]:
    """(data, raw type) for GGUFWriter.add_tensor: norms and biases stay f32; q8_0 falls back to f16 for rows that
    are not a multiple of its 32-value block."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if array.ndim < 2 or quant == "f32":
        return array.astype(np.float32), None
    if quant == "f16" or (quant == "q8_0" and array.shape[-1] % 32):
        return array.astype(np.float16), None
    qtype = GGMLQuantizationType.BF16 if quant == "bf16" else GGMLQuantizationType.Q8_0
    return quants.quantize(array.astype(np.float32), qtype), qtype


def _tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise PoetError(f"the {type(tokenizer).__name__} tokenizer has no tokenizer.json form; GGUF export needs a "
                        "byte-level BPE tokenizer (GPT-2, SmolLM2, DeepSeek-Coder style)")
    return json.loads(backend.to_str())


def check_tokenizer(tokenizer: Any) -> dict[str, Any]:
    tj = _tokenizer_json(tokenizer)
    kind = (tj.get("model") or {}).get("type")
    byte_level = "ByteLevel" in json.dumps(tj.get("pre_tokenizer")) + json.dumps(tj.get("decoder"))
    if kind != "BPE" or not byte_level:
        raise PoetError(f"the model's tokenizer is {kind or 'unknown'}{'' if byte_level else ' (not byte-level)'}; "
                        "GGUF export supports byte-level BPE tokenizers (GPT-2, SmolLM2, DeepSeek-Coder style)")
    return tj


def pre_tokenizer_name(tokenizer: Any, tj: dict[str, Any], spec: str) -> tuple[str, list[str]]:
    """llama.cpp's name for how text is split before BPE: the bundled GGUF's own, a known vocabulary's, GPT-2's
    regex for a plain ByteLevel pre-tokenizer, else 'default' (with a note)."""
    if spec.strip() in bundled.BUNDLED_ALIASES:
        from gguf import GGUFReader

        field_ = GGUFReader(bundled.gguf_path()).fields.get("tokenizer.ggml.pre")
        if field_ is not None:
            return str(field_.contents()), []
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if digest in _KNOWN_PRE:
        return _KNOWN_PRE[digest], []
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2", []
    return "default", ["the tokenizer's pre-tokenizer is not one llama.cpp knows by name; 'default' was written, "
                       "so llama.cpp may split some text differently"]


def _vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and their llama.cpp types, id by id (as convert_hf_to_gguf.py's get_vocab_base)."""
    from gguf import TokenType

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif reverse[i] in added:
            tokens.append(reverse[i])
            types.append(TokenType.CONTROL if i in decoder and decoder[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def write_gguf(model: Any, tokenizer: Any, path: Path, quant: str, spec: str, run_id: str, stage: int,
               report: Progress, describe: str | None = None) -> list[str]:
    """Write model (merged, fp32) and its tokenizer as one GGUF file; returns notes for the user.

    describe: the file's description when it is not a run's merged poet (a base model for the llama.cpp engine)."""
    import gguf
    import torch

    from poetwb import __version__
    from poetwb.core.portable import base_record

    c = model.config
    arch = c.model_type
    if arch not in GGUF_ARCHS:
        raise PoetError(f"GGUF export does not support the {arch} architecture; supported: Llama-shaped and GPT-2")
    tj = check_tokenizer(tokenizer)
    report(0, 0, "writing the tokenizer")
    scratch = path.parent / ".tokenizer"
    tokenizer.save_pretrained(scratch)
    c.to_json_file(scratch / "config.json")
    vocab_size = int(c.vocab_size)
    tokens, types = _vocab(tokenizer, vocab_size)
    special = gguf.SpecialVocab(scratch, load_merges=True, n_vocab=vocab_size)
    shutil.rmtree(scratch)
    pre, notes = pre_tokenizer_name(tokenizer, tj, spec)

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer = gguf.GGUFWriter(path, arch)
    base = base_record(spec)
    writer.add_type("model")
    writer.add_name(f"{run_id} stage {stage}" if describe is None else base["hub_id"] or base["id"])
    writer.add_description(describe or f"A poet fine-tuned with poetwb {__version__} (LoRA, run {run_id}, "
                           f"stage {stage}), merged into {base['hub_id'] or base['id']}")
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, base["hub_id"] or base["id"])
    if base["hub_id"]:
        writer.add_base_model_repo_url(0, f"https://huggingface.co/{base['hub_id']}")
    writer.add_file_type(int(ftype))
    if quant == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    d = SamplingConfig()
    writer.add_sampling_temp(d.temperature)
    writer.add_sampling_top_p(d.top_p)
    writer.add_sampling_top_k(d.top_k)
    writer.add_sampling_penalty_repeat(d.repetition_penalty)

    if arch == "llama":
        n_head = int(c.num_attention_heads)
        n_kv = int(getattr(c, "num_key_value_heads", None) or n_head)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // n_head)
        rope = dict(getattr(c, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") not in ("default", None):
            raise PoetError(f"GGUF export does not support {rope['rope_type']} rope scaling yet; use --format hf")
        theta = rope.get("rope_theta") or getattr(c, "rope_theta", None) or 10000.0
        n_layers = int(c.num_hidden_layers)
        writer.add_context_length(int(c.max_position_embeddings))
        writer.add_embedding_length(int(c.hidden_size))
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(int(c.intermediate_size))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_freq_base(float(theta))
        writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
        writer.add_rope_dimension_count(head_dim)
        if head_dim * n_head != c.hidden_size:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_vocab_size(vocab_size)
        arch_enum = gguf.MODEL_ARCH.LLAMA
    else:
        n_layers = int(c.n_layer)
        writer.add_context_length(int(c.n_positions))
        writer.add_embedding_length(int(c.n_embd))
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(int(getattr(c, "n_inner", None) or 4 * c.n_embd))
        writer.add_head_count(int(c.n_head))
        writer.add_layer_norm_eps(float(c.layer_norm_epsilon))
        arch_enum = gguf.MODEL_ARCH.GPT2

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(_adds_bos(tokenizer))
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(arch_enum, n_layers)
    tied = bool(getattr(c, "tie_word_embeddings", False))
    state = model.state_dict()
    items = [(k, v) for k, v in state.items()
             if not k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))
             and not (tied and k == "lm_head.weight")]
    for i, (name, tensor) in enumerate(items):
        report(i, len(items), f"converting tensors to {quant}")
        data = tensor.detach().to(device="cpu", dtype=torch.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, n_head, n_head)
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, n_head, n_kv)
        elif arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            data = data.T  # Conv1D keeps (in, out)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise PoetError(f"GGUF export cannot place the tensor {name} of this {arch} model; use --format hf")
        array, raw = _encode(data.contiguous().numpy(), quant)
        writer.add_tensor(new_name, array, raw_dtype=raw)
    report(len(items), len(items), "writing the GGUF file")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return notes


# --- Ollama -------------------------------------------------------------------------------------------------------

_MARK = "POETWB_PROMPT_MARK"


def ollama_template(tokenizer: Any, stage: int) -> str:
    """A Go template that renders exactly the prompt the model trained on: the chat template (or the plain
    instruction format) around the request for stage 2, the bare text for a stage-1 continuation model."""
    from poetwb.core.generate import format_prompt

    if stage == 1:
        return "{{ .Prompt }}"
    before, after = format_prompt(tokenizer, _MARK, instruct=True).split(_MARK, 1)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and before.startswith(bos) and _adds_bos(tokenizer):
        before = before[len(bos):]  # llama.cpp adds it itself (tokenizer.ggml.add_bos_token)

    def literal(text: str) -> str:
        return text.replace("{{", '{{ "{{" }}')

    return literal(before) + "{{ .Prompt }}" + literal(after)


def modelfile(gguf_name: str, tokenizer: Any, stage: int, run_id: str) -> str:
    from poetwb import __version__

    d = SamplingConfig()
    template = ollama_template(tokenizer, stage)
    if '"""' in template:
        raise PoetError("the model's chat template contains '\"\"\"', which a Modelfile cannot quote")
    stops = [t for t in {tokenizer.eos_token} if t]
    if stage == 2 and tokenizer.chat_template == PLAIN_CHAT_TEMPLATE:
        stops.append("User:")
    lines = [
        f"# poetwb {__version__}: run {run_id}, stage {stage}",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        f"PARAMETER temperature {d.temperature}",
        f"PARAMETER top_p {d.top_p}",
        f"PARAMETER top_k {d.top_k}",
        f"PARAMETER repeat_penalty {d.repetition_penalty}",
        f"PARAMETER num_predict {d.max_new_tokens}",
        *[f"PARAMETER stop {json.dumps(s)}" for s in stops],
    ]
    return "\n".join(lines) + "\n"


# --- the model card -----------------------------------------------------------------------------------------------


def _losses_markdown(folder: Path, stage: int) -> list[str]:
    from poetwb.core.evaluate import read_saved
    from poetwb.core.portable import read_provenance
    from poetwb.core.progress import describe_losses

    lines: list[str] = []
    losses = describe_losses(runs.read_status(folder).get("eval_loss", {}))
    if losses:
        lines.append(f"Validation loss at the start and end of each stage: {losses}.")
    prov = read_provenance(runs.adapter_dir(folder, stage)) or {}
    held = prov.get("held_out_loss") or {}
    if held:
        lines.append("Held-out loss of this adapter: " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}"
                                                                  for k, v in held.items()) + ".")
    saved = read_saved(folder, "eval.json")
    if saved and saved.get("models"):
        splits = sorted({s for row in saved["models"].values() for s in row})
        lines += ["", "| model | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        for name, row in saved["models"].items():
            cells = [f"{row[s]['loss']:.3f}" if s in row else "" for s in splits]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("(loss = mean cross-entropy per token on held-out poems, from `poetwb eval`)")
    return lines or ["No held-out loss was recorded for this run."]


def model_card(folder: Path, stage: int, fmt: str, quant: str, tokenizer: Any, sample: dict[str, str] | None,
               template_added: bool, commands: list[str], gguf_name: str = "") -> str:
    from poetwb import __version__
    from poetwb.core.portable import base_record
    from poetwb.core.preflight import describe_inputs

    config = runs.read_config(folder)
    base = base_record(config.model)
    inputs = describe_inputs(config)
    d = SamplingConfig()
    front = ["---"]
    if base["hub_id"]:
        front.append(f"base_model: {base['hub_id']}")
    front += [f"library_name: {'transformers' if fmt == 'hf' else 'gguf'}", "pipeline_tag: text-generation",
              "tags:", "- poetwb", "- poetry", "- lora", "---", ""]
    what = {"hf": f"a Hugging Face model folder ({quant} safetensors)",
            "gguf": f"a GGUF file ({quant}) for llama.cpp, LM Studio and other GGUF runtimes",
            "ollama": f"an Ollama model: a GGUF file ({quant}) and a Modelfile"}[fmt]
    lines = [
        *front,
        f"# {folder.name} (stage {stage}): a poet made with poetwb",
        "",
        f"A LoRA fine-tune of {base['hub_id'] or base['id']} by poetwb "
        f"{__version__}, merged into its base and saved as {what}.",
        "",
        "## Use it",
        "",
    ]
    if fmt == "hf":
        prompt = (f'tok.apply_chat_template([{{"role": "user", "content": "{SAMPLE_REQUEST}"}}], '
                  "tokenize=False, add_generation_prompt=True)" if stage == 2 else f'"{SAMPLE_FIRST_LINE}"')
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  'tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
                  'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")',
                  f"text = {prompt}",
                  "inputs = tok(text, return_tensors='pt', add_special_tokens=False)",
                  "out = model.generate(**inputs)  # samples with the defaults in generation_config.json",
                  "print(tok.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True))", "```"]
    elif fmt == "gguf":
        mode = "-cnv" if stage == 2 else f'-p "{SAMPLE_FIRST_LINE}" -no-cnv'
        lines += ["```sh", f"llama-cli -m {gguf_name} {mode} "
                  f"--temp {d.temperature} --top-p {d.top_p} --repeat-penalty {d.repetition_penalty}", "```"]
    else:
        lines += ["```sh", *commands, "```"]
    lines += ["", "## Prompt format", ""]
    if stage == 1:
        lines.append("Stage 1 learnt poems, not requests: give it the first line of a poem and let it continue.")
    elif template_added:
        lines.append("Stage 2 trained on requests in the plain format `User: <request>\\nAssistant:`; the base has no "
                     "chat template, so that format was added as one (apply_chat_template renders it).")
    else:
        lines.append("Stage 2 trained on requests through the base model's own chat template (kept here).")
    lines += ["", f"Sampling defaults: temperature {d.temperature}, top-p {d.top_p}, top-k {d.top_k}, "
              f"repetition penalty {d.repetition_penalty}.", "", "## Training", "",
              f"- base model: {base['id']} — {base['how_to_get']}",
              f"- corpus (stage 1): {inputs['corpus']}",
              f"- instructions (stage 2): {inputs['instructions']}",
              f"- exported stage: {stage}", "", "### Held-out loss", ""]
    lines += _losses_markdown(folder, stage)
    lines += ["", "### Run config (config.toml)", "", "```toml", config.to_toml().strip(), "```", ""]
    if sample:
        lines += ["## A sample poem", "",
                  f"{'Request' if sample['mode'] == 'instruct' else 'First line'}: *{sample['prompt']}* "
                  f"(seed 0, the sampling defaults above, generated by the merged model before export)", "",
                  "```text", sample["text"].replace("```", "'''"), "```", ""]
    return "\n".join(lines)
