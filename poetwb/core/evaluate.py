"""Evidence that tuning helped: held-out loss and perplexity for the base model and after each stage, on the
exact splits the run trained with; poetic metrics of generations for a prompt set against the poet's own
held-out poems. Results are saved in the run directory (eval.json, metrics.json)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poetwb.core import data, imports, runs
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_write_json

# progress(done, total, what): batches (loss) or prompts (metrics) done so far; total 0 while a phase has no count
Progress = Callable[[int, int, str], None]


def _say(progress: Progress | None, what: str) -> None:
    if progress is not None:
        progress(0, 0, what)


def run_splits(folder: Path, tokenizer: Any) -> tuple[dict[str, Any], Any]:
    """Rebuild the run's held-out sets: stage 1 val (packed as trained), stage 2 val and test (prompt masked)."""
    cfg = runs.read_config(folder)
    poems = data.load_poems(cfg.corpus)
    split = data.split_poems_dataset(poems, cfg.seed)
    sets: dict[str, Any] = {}
    sets["stage1_val"] = data.stage1_sets(tokenizer, split, cfg.stage1.seq_len, cfg.packing)[1]
    if cfg.stage2.enabled and cfg.instructions.kind != "none":
        pairs, _ = data.load_pairs(cfg.instructions, split, cfg.seed)
        report = data.DataReport("eval")
        for name in ("val", "test"):
            ds = data.tokenize_pairs(tokenizer, pairs[name], cfg.stage2.seq_len, cfg.instructions.too_long, report)
            if len(ds):
                sets[f"stage2_{name}"] = ds
    return sets, split


def dataset_loss(model: Any, ds: Any, pad_id: int, batch_size: int = 8, bf16: bool = False,
                 on_batch: Callable[[], None] | None = None) -> tuple[float, int]:
    """Token-weighted mean cross-entropy over label tokens (next-token, -100 ignored), without gradients. On a CPU,
    on the threads other processes leave free (core/cpu_share.py): beside a training job, 16 blocks of 256 tokens
    took 49-55 s on both threads against 21-23 s on the free one (11.7 s alone; AVX2-only EPYC, 2 cores)."""
    import torch
    import torch.nn.functional as F

    from poetwb.core import cpu_share

    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with cpu_share.torch_threads(cpu_share.free_torch_threads(device)), torch.inference_mode(), \
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(ds), batch_size):
            rows = ds[i:i + batch_size]
            width = max(len(x) for x in rows["input_ids"])
            ids = torch.full((len(rows["input_ids"]), width), pad_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for r, (x, y) in enumerate(zip(rows["input_ids"], rows["labels"], strict=True)):
                ids[r, :len(x)], labels[r, :len(y)], mask[r, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                   ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((shift_labels != -100).sum())
            if on_batch is not None:
                on_batch()
    return (total / count if count else float("nan")), count


def finished_stages(folder: Path) -> list[int]:
    """The stages (1, 2) whose adapter the run has saved; a one-line error when it has none yet."""
    stages = [s for s in (1, 2) if runs.has_adapter(folder, s)]
    if not stages:
        raise PoetError(f"run {folder.name!r} has no adapters yet; let a stage finish (or resume it) first")
    return stages


def load_run_model(folder: Path, progress: Progress | None = None, dtype: str = "auto") -> tuple[Any, Any, list[str]]:
    """The run's base model with every finished stage's adapter attached (named stage1 / stage2); dtype as
    models.load (held-out losses ask for models.EXACT: no int8 copies)."""
    imports.ready(peft=True)
    from peft import PeftModel

    from poetwb.core import models

    stages = finished_stages(folder)
    cfg = runs.read_config(folder)
    _say(progress, models.loading_note(cfg.model))
    loaded = models.load(cfg.model, dtype=dtype)
    model = loaded.model
    names = []
    for i, stage in enumerate(stages):
        path, name = runs.adapter_dir(folder, stage), f"stage{stage}"
        try:
            if i == 0:
                model = PeftModel.from_pretrained(model, path, adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(path, adapter_name=name, is_trainable=False)
        except Exception as exc:
            raise PoetError(f"the stage-{stage} adapter of run {folder.name!r} is damaged or does not fit "
                            f"({type(exc).__name__}); retrain or resume the run") from exc
        names.append(name)
    model.eval()
    return model, loaded.tokenizer, names


def evaluate_run(run_id: str, batch_size: int = 8, progress: Progress | None = None) -> dict[str, Any]:
    """Loss and perplexity of base / stage 1 / stage 2 on every held-out split; saved as eval.json.

    progress(done, total, what) is called as batches finish (and with total 0 for the loading phases)."""
    from poetwb.core import models
    from poetwb.core.train_job import use_bf16

    folder = runs.open_run(run_id)
    model, tokenizer, names = load_run_model(folder, progress, dtype=models.EXACT)
    _say(progress, "rebuilding the held-out sets")
    sets, _ = run_splits(folder, tokenizer)
    bf16 = use_bf16("auto")
    start = time.perf_counter()
    table: dict[str, dict[str, Any]] = {}
    labels = ["base", *names]
    total = len(labels) * sum(math.ceil(len(ds) / batch_size) for ds in sets.values())
    done = 0
    for label in labels:
        row: dict[str, Any] = {}
        for split_name, ds in sets.items():
            what = f"{label} on {split_name.replace('_', ' ')}"

            def tick(what: str = what) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total, what)

            if label == "base":
                with model.disable_adapter():
                    loss, n = dataset_loss(model, ds, tokenizer.pad_token_id, batch_size, bf16, tick)
            else:
                model.set_adapter(label)
                loss, n = dataset_loss(model, ds, tokenizer.pad_token_id, batch_size, bf16, tick)
            row[split_name] = {"loss": loss, "perplexity": math.exp(loss) if loss < 50 else float("inf"),
                               "tokens": n}
        table[label] = row
    result = {"run_id": run_id, "models": table, "seconds": round(time.perf_counter() - start, 1),
              "bf16": bf16}
    atomic_write_json(folder / "eval.json", result)
    return result


def poetic_metrics(run_id: str, prompts: list[dict[str, str]], max_new_tokens: int = 96,
                   seed: int = 0, progress: Progress | None = None, form: Any = None,
                   candidates: int = 8, engine: str = "auto") -> dict[str, Any]:
    """Generate base and tuned poems for each prompt (one batched pass each, or line by line in a form) and
    compare their metrics with the poet's own held-out poems; saved as metrics.json (metrics-<form>.json with a
    form) with the generations. With a form, each row also has the shares of poems with exactly the form's line
    count, of required rhyme pairs that rhyme and of lines within one syllable, by metrics' own checker.
    engine: as `generate --engine` (auto: llama.cpp where it is installed); the result names it."""
    from poetwb.core import generate, llamacpp, metrics
    from poetwb.core.config import SamplingConfig
    from poetwb.core.models import LoadedModel

    if not prompts:
        raise PoetError("the prompt set is empty; give at least one prompt")
    folder = runs.open_run(run_id)
    cfg = runs.read_config(folder)
    stages = finished_stages(folder)
    adapter = runs.adapter_dir(folder, stages[-1])
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, seed=seed)
    fast = None
    if llamacpp.choose(engine, form) == "llamacpp":  # then the torch model is never loaded
        _say(progress, "loading the model for llama.cpp")
        fast = llamacpp.engine_for(engine, cfg.model, [adapter])
    loaded = None
    if fast is None:
        model, tokenizer, names = load_run_model(folder, progress)
        model.set_adapter(names[-1])
        loaded = LoadedModel(model, tokenizer, cfg.model, folder, adapter)
    outputs: dict[str, list[str]] = {"base": [], "tuned": []}
    seconds: dict[str, float] = {"base": 0.0, "tuned": 0.0}
    for i, p in enumerate(prompts):
        if progress is not None:
            progress(i, len(prompts), f"generating for prompt {i + 1} of {len(prompts)}")
        texts = ["", ""]
        stats: list[Any] = []
        instruct = p.get("mode") == "instruct"
        chunks = (llamacpp.columns(fast, p["text"], sampling, [None, 0], instruct, stats=stats, form=form,
                                   candidates=candidates) if loaded is None
                  else generate.side_by_side(loaded, p["text"], sampling, instruct, stats=stats, form=form,
                                             candidates=candidates))
        for row, chunk in chunks:
            texts[row] += chunk
        lead = "" if instruct or form is None else p["text"]  # a raw prompt is a form poem's first line
        for key, text, st in zip(("base", "tuned"), texts, stats, strict=True):
            outputs[key].append((lead + text).strip())
            seconds[key] += st.seconds
    if progress is not None:
        progress(len(prompts), len(prompts), "measuring the poems")
    split = data.split_poems_dataset(data.load_poems(cfg.corpus), cfg.seed)  # the run's own split, untokenized
    vocab = {w for t in split["train"]["text"] for w in metrics.words(t)}
    instruct = [p["text"] for p in prompts if p.get("mode") == "instruct"]
    table = {}
    for key in ("base", "tuned"):
        row = metrics.summarize(outputs[key], vocab)
        inst_out = [o for p, o in zip(prompts, outputs[key], strict=True) if p.get("mode") == "instruct"]
        row["topic_hit_rate"] = metrics.summarize(inst_out, prompts=instruct)["topic_hit_rate"] if instruct else None
        row["seconds_per_poem"] = seconds[key] / len(prompts)
        if form is not None:
            row.update(metrics.form_summary([metrics.form_report(o, form) for o in outputs[key]]))
        table[key] = row
    table["poet (held-out)"] = metrics.summarize(list(split["val"]["text"]), vocab)
    result = {"run_id": run_id, "adapter": f"stage{stages[-1]}", "table": table, "prompts": prompts,
              "generations": outputs, "sampling": sampling.to_dict(),
              "engine": generate.engine_name(fast if loaded is None else loaded),
              "form": form.describe() if form else "free",
              "candidates": candidates if form else None}
    atomic_write_json(folder / (f"metrics-{form.name}.json" if form else "metrics.json"), result)
    return result


def load_prompts(path: str | None) -> list[dict[str, str]]:
    import tomllib

    from poetwb.core.paths import assets_dir

    file = Path(path) if path else assets_dir() / "prompts.toml"
    if not file.is_file():
        raise PoetError(f"prompt set {file} does not exist")
    try:
        return list(tomllib.loads(file.read_text(encoding="utf-8")).get("prompts", []))
    except tomllib.TOMLDecodeError as exc:
        raise PoetError(f"prompt set {file} is not valid TOML: {exc}") from exc


def read_saved(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None
