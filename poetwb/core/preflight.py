"""Checks a training config's inputs before a run exists, so a missing corpus or a table without the needed column
is a one-line message at Start (TUI) or `poetwb train` (CLI), not a run that fails seconds later and stays in the
list. The checks are cheap: paths, file kinds, table headers; nothing is tokenised and no model is loaded.

Also describes, in words, which model, corpus and instructions a config will use (both front ends show it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from poetwb.core import bundled, paths
from poetwb.core.config import CorpusSpec, InstructionSpec, TrainConfig
from poetwb.core.errors import PoetError, first_line

TEXT_SUFFIXES = {".txt", ".md"}
TABLE_SUFFIXES = {".jsonl", ".csv", ".parquet"}


def check_inputs(config: TrainConfig) -> None:
    """Raise a one-line PoetError naming what is wrong with the model, corpus or instructions of config.

    Hyperparameters are already checked when the TrainConfig is built (TrainConfig.from_dict)."""
    _check_model(config.model)
    _check_corpus(config.corpus)
    if config.stage2.enabled:
        _check_instructions(config.instructions)


def _check_model(spec: str) -> None:
    if spec.strip() in bundled.BUNDLED_ALIASES:
        bundled.gguf_path()  # installed? (converting happens in the job, once)
        return
    from poetwb.core import models

    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        models.check_model_folder(path.resolve())
    elif paths.hub_offline():  # online, the job downloads it
        models.resolve(spec, download=False)


def _check_corpus(spec: CorpusSpec) -> None:
    if spec.kind == "bundled":
        from poetwb.core.data import BUNDLED_POETS

        bundled.corpus_dir()
        unknown = [p for p in spec.poets if p not in BUNDLED_POETS]
        if unknown:
            raise PoetError(f"corpus: unknown bundled poet {unknown[0]!r}; choose from: {', '.join(BUNDLED_POETS)}")
        return
    if spec.kind == "hf":
        return  # a hub data set is fetched (or found in the cache) by the job; its errors name the id
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise PoetError(f"corpus path {path} does not exist; give a .txt/.md file, a folder of poems or a table")
    if path.is_dir():
        if not any(p.suffix.lower() in TEXT_SUFFIXES and p.is_file() for p in path.rglob("*")):
            raise PoetError(f"corpus folder {path} holds no .txt or .md files (one poem per file)")
        return
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        _check_text(path, "corpus")
    elif suffix in TABLE_SUFFIXES:
        needed = [spec.text_column] + ([spec.poet_column] if spec.poet_filter else [])
        _check_columns(path, needed, "corpus", "set the text column mapping (--text-column)")
    else:
        raise PoetError(f"corpus {path}: unsupported file type {suffix!r}; use .txt, .md, .jsonl, .csv or .parquet")


def _check_instructions(spec: InstructionSpec) -> None:
    if spec.kind in {"synth", "none"} or (spec.kind == "conversations" and spec.dataset and not spec.path):
        return
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise PoetError(f"instructions file {path} does not exist")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise PoetError(f"instructions {path}: unsupported file type {path.suffix!r}; use .jsonl, .csv or .parquet")
    needed = ["prompt", "completion"] if spec.kind == "local" else [spec.column]
    _check_columns(path, needed, "instructions", "each row needs " + " and ".join(repr(c) for c in needed))


def _check_text(path: Path, what: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        raise PoetError(f"{what} {path} looks like a binary file, not text; give a UTF-8 .txt/.md file of poems")
    if not head.strip():
        raise PoetError(f"{what} {path} is empty: it yields no poems")


def table_columns(path: Path) -> list[str]:
    """The column names of a .jsonl (first row), .csv (header) or .parquet (schema) file, without reading it all."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise PoetError(f"{path} line {n} is not valid JSON ({exc.msg})") from exc
                        return list(row) if isinstance(row, dict) else []
            return []
        if suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as fh:
                return next(csv.reader(fh), [])
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except UnicodeDecodeError as exc:
        raise PoetError(f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
    except PoetError:
        raise
    except Exception as exc:
        raise PoetError(f"could not read {path}: {first_line(exc)}") from exc


def _check_columns(path: Path, needed: list[str], what: str, hint: str) -> None:
    columns = table_columns(path)
    if not columns:
        raise PoetError(f"{what} {path} has no rows")
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PoetError(f"{what} {path} has no column {missing[0]!r} (columns: {', '.join(columns)}); {hint}")


def describe_inputs(config: TrainConfig) -> dict[str, str]:
    """Which model, corpus and instructions config uses, in words: {"model": …, "corpus": …, "instructions": …}."""
    from poetwb.core.data import BUNDLED_POETS

    model = "bundled SmolLM2-135M-Instruct" if config.model.strip() in bundled.BUNDLED_ALIASES else config.model
    c = config.corpus
    if c.kind == "bundled":
        names = [BUNDLED_POETS[p][2] if p in BUNDLED_POETS else p for p in c.poets]
        corpus = "bundled poets: " + ", ".join(names)
    elif c.kind == "local":
        corpus = f"{c.path}" + (f" (column {c.text_column!r})" if Path(c.path).suffix.lower() in TABLE_SUFFIXES
                                else "")
    else:
        corpus = f"hub data set {c.dataset} (column {c.text_column!r})"
    if c.poet_filter:
        corpus += f", poets matching {c.poet_filter!r}"
    i = config.instructions
    if not config.stage2.enabled or i.kind == "none":
        instructions = "none (stage 1 only)"
    elif i.kind == "synth":
        instructions = "requests synthesised from the corpus"
    elif i.kind == "local":
        instructions = f"prompt/completion pairs from {i.path}"
    else:
        instructions = f"conversations (User: … Assistant: …) from {i.path or i.dataset}"
    return {"model": model, "corpus": corpus, "instructions": instructions}
