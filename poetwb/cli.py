"""The `poetwb` command: no arguments opens the workbench; subcommands drive the core from scripts.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so `--version`,
`--help` and the TUI's first paint stay fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poetwb import __version__
from poetwb.core.errors import PoetError

Handler = Callable[[argparse.Namespace], int]


def _eprint(message: str) -> None:
    print(f"poetwb: {message}", file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _human_params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


# --- commands ---------------------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from poetwb.core import models

    entries = models.catalogue([Path(p) for p in args.path])
    if args.json:
        print(json.dumps([{"schema": JSON_SCHEMA, **e.to_dict()} for e in entries], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Models", title_justify="left")
    for col in ("id", "source", "architecture", "params", "offline", "LoRA train mem*"):
        table.add_column(col, justify="right" if col in {"params", "LoRA train mem*"} else "left",
                         overflow="fold")
    for e in entries:
        table.add_row(e.id, e.source, e.architecture or "?", _human_params(e.params),
                      "yes" if e.offline else "no", _human_bytes(e.train_memory_bytes))
    console = Console()
    console.print(table)
    console.print(f"* estimate at sequence length {models.DEFAULT_SEQ_LEN}, batch {models.DEFAULT_BATCH}", style="dim")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from poetwb.core import models

    _, folder = models.resolve(args.model, allow_pickle=args.allow_pickle)
    print(folder)
    return 0


def _sampling(args: argparse.Namespace) -> Any:
    from poetwb.core.config import SamplingConfig

    return SamplingConfig(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens, seed=args.seed,
    )


def _form(args: argparse.Namespace) -> Any:
    from poetwb.core import forms

    if not 1 <= args.candidates <= forms.MAX_CANDIDATES:
        raise PoetError(f"--candidates must be in 1..{forms.MAX_CANDIDATES}, got {args.candidates}")
    return forms.make_form(args.form, args.scheme, args.syllables, args.stanzas)


def _form_line(text: str, form: Any, stats: Any) -> str:
    """One line under a form poem: its scheme and what it achieved, by the evaluation's own checker."""
    from poetwb.core import metrics

    r = metrics.form_report(text, form)
    syl = " ".join(str(n) for n in r["syllables"])
    return (f"{form.describe()} · got {r['lines']} lines, rhymes {r['rhymes_held']}/{r['rhyme_pairs']}, "
            f"syllables {syl} · {stats.seconds:.1f} s")


def cmd_generate(args: argparse.Namespace) -> int:
    from poetwb.core import generate, llamacpp, models

    sampling = _sampling(args)  # validate before any slow loading
    form = _form(args)
    if not args.prompt.strip():
        raise PoetError("the prompt is empty; pass -p 'The sea is blue, the sky is red' or similar")
    engine = llamacpp.choose(args.engine, form)
    if args.trust_remote_code:
        _eprint("warning: --trust-remote-code runs the model's own Python code on this machine")
    model = args.model
    adapter = models.resolve_adapter(args.adapter, allow_pickle=args.allow_pickle) if args.adapter else None
    if model is None and adapter is not None:  # a run's adapter goes with the base model that run trained
        model = _runs_base([adapter])
    stats: list[Any] = []
    runner = _runner(args.engine, engine, model, [adapter] if adapter else [], trust_remote_code=args.trust_remote_code,
                     allow_pickle=args.allow_pickle, dtype=args.dtype)
    model_id, engine_name = runner.model_id, generate.engine_name(runner)
    chunks = generate.runner_columns(runner, args.prompt, sampling, adapter is None, args.instruct, form,
                                     args.candidates, stats=stats)
    from poetwb.core.text import SafeStream, safe_text, tokens

    lead = "" if args.instruct else args.prompt
    if args.json:
        text = safe_text(lead + "".join(chunk for _, chunk in chunks))
        saved = _save_poems(args, [(text, adapter)], model_id, sampling, form, engine_name) if args.save else []
        print(json.dumps({
            "schema": 1, "model": model_id, "adapter": str(adapter) if adapter else None, "engine": engine_name,
            "prompt": args.prompt, "mode": "instruct" if args.instruct else "raw", "text": text,
            "form": form.describe() if form else "free", "scheme": form.scheme if form else None,
            **stats[0].to_dict(), "sampling": sampling.to_dict(), **({"saved_id": saved[0]} if saved else {}),
        }, indent=2))
        return 0
    stream = SafeStream()  # a model's escape sequences and carriage returns never reach the terminal
    lead = stream.feed(lead)
    print(lead, end="", flush=True)
    text = lead
    for _, chunk in chunks:
        piece = stream.feed(chunk)
        text += piece
        print(piece, end="", flush=True)
    piece = stream.end()
    text += piece
    print(piece, end="", flush=True)
    if not text.endswith("\n"):  # a form's last line brings its own newline
        print()
    if form is not None:
        _eprint(_form_line(text, form, stats[0]))
    elif args.verbose:
        _eprint(f"{tokens(stats[0].new_tokens)} in {stats[0].seconds:.1f} s "
                f"({stats[0].tokens_per_s:.1f} tokens/s, {stats[0].by(engine_name)}, {stats[0].reason})")
    if not args.instruct and stats[0].reason == "end of text" and stats[0].new_tokens <= 2:
        _eprint("note: the model ended the text at once; for a request such as 'Write a poem about the sea' add "
                "--instruct, or give a poem's first line")
    if args.save:
        (pid,) = _save_poems(args, [(text, adapter)], model_id, sampling, form, engine_name)
        _eprint(f"saved as poem {pid} in the library (`poetwb poems list`)")
    return 0


def _runner(asked: str, engine: str, model: str | None, adapters: list[Any], **load: Any) -> Any:
    """The base model with its adapters on the chosen engine: a llama.cpp Engine, or a torch LoadedModel (`load`
    goes to models.load). Under --engine auto a model or adapter llama.cpp cannot run (another architecture, DoRA,
    own Python code) quietly takes the torch path; asked for by name, it is an error."""
    from poetwb.core import llamacpp, models

    if engine == "llamacpp":
        remote = load.get("trust_remote_code")  # a model that needs its own Python code is one llama.cpp cannot run
        if remote and asked == "llamacpp":
            raise PoetError("--trust-remote-code models run on torch only; drop --engine llamacpp")
        fast = None if remote else llamacpp.engine_for(asked, model or "bundled", adapters, note=_eprint)
        if fast is not None:
            return fast
    _convert_bundled_with_progress(model or "bundled")
    return models.load(model, adapters=adapters, **load)


def _save_poems(args: argparse.Namespace, texts: list[tuple[str, Any]], model: str, sampling: Any,
                form: Any, engine: str) -> list[int]:
    """Keep generated poems in the library with their provenance; returns their ids. Empty poems are an error."""
    from poetwb.core.library import Library, Poem

    lib = Library()
    try:
        ids = []
        for text, adapter in texts:
            poem = Poem(text=text.strip("\n"), prompt=args.prompt, model=model,
                        mode="instruct" if args.instruct else "raw", adapter=str(adapter) if adapter else "",
                        sampling={**sampling.to_dict(), "engine": engine}, seed=sampling.seed,
                        form=form.describe() if form else "")
            ids.append(lib.add(poem).id)
        return ids
    finally:
        lib.close()


def _train_config(args: argparse.Namespace) -> Any:
    """preset + config file + flags, by the core's one builder and merge rule (config.MERGE_RULE)."""
    from poetwb.core.config import build_train_config

    over: dict[str, Any] = {}
    if args.model:
        over["model"] = args.model
    if args.corpus:
        over["corpus"] = _corpus_spec(args.corpus, args)
    elif args.poets:
        over["corpus"] = {"kind": "bundled", "poets": args.poets.split(",")}
    if args.instructions:
        over["instructions"] = _instruction_spec(args.instructions)
    if args.max_steps is not None:
        over["stage1"] = {"max_steps": args.max_steps}
        over["stage2"] = {"max_steps": args.max_steps}
    if args.seed is not None:
        over["seed"] = args.seed
    if args.gradient_checkpointing is not None:
        over["gradient_checkpointing"] = {"on": True, "off": False}.get(args.gradient_checkpointing, "auto")
    return build_train_config(args.preset, args.config, over)


def _corpus_spec(value: str, args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any]
    if value == "bundled":
        spec = {"kind": "bundled", "poets": (args.poets or "shakespeare").split(",")}
    elif value.startswith("hf:"):
        spec = {"kind": "hf", "dataset": value[3:]}
    else:
        spec = {"kind": "local", "path": str(Path(value).expanduser().resolve())}
    if args.text_column:
        spec["text_column"] = args.text_column
    if args.poet_filter:
        spec["poet_filter"] = args.poet_filter
    return spec


def _instruction_spec(value: str) -> dict[str, Any]:
    if value in {"synth", "none"}:
        return {"kind": value}
    if value.startswith("conversations:"):
        target = value.split(":", 1)[1]
        if Path(target).expanduser().exists():
            return {"kind": "conversations", "path": str(Path(target).expanduser().resolve())}
        return {"kind": "conversations", "dataset": target.removeprefix("hf:")}
    return {"kind": "local", "path": str(Path(value.removeprefix("local:")).expanduser().resolve())}


JSON_SCHEMA = 1
"""The version of every `--json` output's keys (README "Exit codes and --json"); each output carries it as
`schema` (in a list, each item does)."""

_TRAIN_CONFIG_FLAGS = {"config": "CONFIG", "preset": "--preset", "model": "--model", "corpus": "--corpus",
                       "poets": "--poets", "text_column": "--text-column", "poet_filter": "--poet-filter",
                       "instructions": "--instructions", "max_steps": "--max-steps", "seed": "--seed",
                       "run_id": "--run-id", "gradient_checkpointing": "--gradient-checkpointing"}


def cmd_train(args: argparse.Namespace) -> int:
    from poetwb.core import preflight, runs

    if args.resume:
        given = [flag for name, flag in _TRAIN_CONFIG_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise PoetError(f"--resume continues {args.resume} with its own config.toml; drop {', '.join(given)} "
                            "(or start a new run with them)")
        launched = runs.resume_run(args.resume, detach=args.detach)
    else:
        launched = runs.start_run(_train_config(args), args.run_id, detach=args.detach)
    folder = launched.path
    config = runs.read_config(folder)
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout holds only the JSON
    print(f"run {folder.name}  ({folder})", file=out, flush=True)
    for key, text in preflight.describe_inputs(config).items():
        print(f"  {key:13} {text}", file=out, flush=True)
    if args.detach:
        if args.json:
            print(json.dumps({"schema": JSON_SCHEMA, **launched.to_dict()}, indent=2))
        else:
            print(f"training in the background (pid {launched.pid}); follow it with `poetwb runs`", flush=True)
        return 0
    from poetwb.core.progress import describe_losses
    from poetwb.core.train_job import run_job

    if args.json:
        result = run_job(folder)
        print(json.dumps({"schema": JSON_SCHEMA, **launched.to_dict(), "pid": os.getpid(),
                          **result.to_dict()}, indent=2))
        return 0 if result.ok else 3
    from poetwb.console import TrainView

    with TrainView() as view:
        result = run_job(folder, observer=view)
    losses = describe_losses(result.eval_loss)
    print(f"run {folder.name}: {result.state}" + (f"; val loss {losses}" if losses else ""), flush=True)
    return 0 if result.ok else 3


def cmd_runs_delete(args: argparse.Namespace) -> int:
    from poetwb.core import runs

    runs.check_deletable(args.run)  # a running run is refused before anything is asked
    if not args.yes and sys.stdin.isatty():
        answer = input(f"delete run {args.run} with its adapters, checkpoints and logs? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("kept")
            return 1
    runs.delete_run(args.run)
    print(f"deleted run {args.run}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from poetwb.core import runs

    rows = runs.list_runs()
    if args.json:
        print(json.dumps([{"schema": JSON_SCHEMA, **r.to_dict()} for r in rows], indent=2))
        return 0
    if not rows:
        print("no runs yet; start one with `poetwb train --preset cpu-quick`")
        return 0
    for r in rows:
        losses = " ".join(f"{k}={v:.3f}" for k, v in r.eval_loss.items())
        line = f"{r.run_id:40} {r.state:11} stage {r.stage} step {r.step}/{r.total_steps}  {losses}"
        print(line + (f"  error: {r.error}" if r.error else ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from poetwb.core import paths, runs

    status = runs.request_cancel(args.run, wait_s=args.wait)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA, "run_id": args.run, "path": str(paths.run_dir(args.run)),
                          "pid": status.pid, "state": str(status.state), "stage": status.stage,
                          "step": status.step}, indent=2))
        return 0
    print(f"run {args.run}: {status.state} at stage {status.stage} step {status.step}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from poetwb.core.bench import bench_train, format_report

    result = bench_train(args.model, args.poets.split(",") if args.poets else None, args.tokens,
                         profile=args.profile)
    print(json.dumps({"schema": JSON_SCHEMA, **result}, indent=2) if args.json else format_report(result))
    return 0


def _convert_bundled_with_progress(model: str) -> None:
    """The bundled model's first use converts it (~40 s): say so with a bar instead of a silent wait."""
    from poetwb.console import StepsView
    from poetwb.core import bundled

    if model.strip() in bundled.BUNDLED_ALIASES and not bundled.is_converted():
        with StepsView(bundled.CONVERT_NOTE) as view:
            bundled.ensure_converted(view)


def cmd_eval(args: argparse.Namespace) -> int:
    from poetwb.console import StepsView
    from poetwb.core import evaluate, runs

    form = _form(args)  # checked before anything slow
    if form is not None and not args.metrics:
        raise PoetError("--form measures generated poems: add --metrics")
    from poetwb.core import llamacpp

    llamacpp.choose(args.engine, form)  # an engine that cannot serve is said before anything slow
    _convert_bundled_with_progress(runs.read_config(runs.open_run(args.run)).model)
    with StepsView("held-out loss") as view:
        result: dict[str, Any] = {"loss": evaluate.evaluate_run(args.run, batch_size=args.batch_size,
                                                                 progress=view)}
    if args.metrics:
        prompts = evaluate.load_prompts(args.prompts)
        with StepsView("poetic metrics" + (f" ({form.name})" if form else "")) as view:
            result["metrics"] = evaluate.poetic_metrics(args.run, prompts, max_new_tokens=args.max_new_tokens,
                                                        progress=view, form=form, candidates=args.candidates,
                                                        engine=args.engine)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA, **result}, indent=2))
        return 0
    from rich.console import Console

    from poetwb.render import form_table, loss_table, metrics_table

    console = Console()
    console.print(loss_table(result["loss"], f"held-out loss (perplexity), run {args.run}"))
    if "metrics" in result:
        console.print(metrics_table(result["metrics"]))
        if form is not None:
            console.print(form_table(result["metrics"]))
    return 0


def _run_label(adapter: Any) -> str:
    """A column title for an adapter: its run and poets, else the folder's name."""
    from poetwb.core import runs

    folder = runs.run_of_adapter(adapter)
    if folder is None:
        return Path(adapter).name
    cfg = runs.read_config(folder)
    who = ", ".join(cfg.corpus.poets) if cfg.corpus.kind == "bundled" else Path(cfg.corpus.path or
                                                                                cfg.corpus.dataset).name
    return f"{folder.name} ({who})"


def _runs_base(adapters: list[Any]) -> str | None:
    """The base model the adapters' runs trained; they must agree (one copy of the base weights serves all)."""
    from poetwb.core import runs

    bases = {}
    for a in adapters:
        folder = runs.run_of_adapter(a)
        if folder is not None:
            bases[runs.read_config(folder).model] = folder.name
    if len(bases) > 1:
        raise PoetError("the runs were trained on different base models (" + ", ".join(
            f"{run}: {m}" for m, run in bases.items()) + "); compare runs of one base model, or pass -m")
    return next(iter(bases), None)


def cmd_compare(args: argparse.Namespace) -> int:
    from poetwb.core import generate, llamacpp, models

    sampling = _sampling(args)
    form = _form(args)
    if not args.prompt.strip():
        raise PoetError("the prompt is empty; pass -p 'The sea is blue, the sky is red' or similar")
    if len(args.adapter) > 4:
        raise PoetError(f"compare up to four fine-tuned runs at once, got {len(args.adapter)}")
    engine = llamacpp.choose(args.engine, form)
    adapters = [models.resolve_adapter(a) for a in args.adapter]
    model = args.model or _runs_base(adapters)
    labels = ["base", *(_run_label(a) for a in adapters)]
    texts = [""] * (len(adapters) + 1)
    stats: list[Any] = []
    runner = _runner(args.engine, engine, model, adapters, dtype=args.dtype)
    model_id, engine_name = runner.model_id, generate.engine_name(runner)
    for col, chunk in generate.runner_columns(runner, args.prompt, sampling, True, args.instruct, form,
                                              args.candidates, stats=stats):
        texts[col] += chunk
    from poetwb.core.text import safe_text

    lead = "" if args.instruct else args.prompt
    texts = [safe_text(lead + t) for t in texts]
    saved: dict[int, int] = {}
    if args.save:
        keep = [i for i in range(len(texts)) if args.save == "both" or (i == 0) == (args.save == "base")]
        ids = _save_poems(args, [(texts[i], [None, *adapters][i]) for i in keep], model_id, sampling, form,
                          engine_name)
        saved = dict(zip(keep, ids, strict=True))
    if args.json:
        cols = [{"label": label, "adapter": str(a) if a else None, "text": t, **st.to_dict(),
                 **({"saved_id": saved[i]} if i in saved else {})}
                for i, (label, a, t, st) in enumerate(zip(labels, [None, *adapters], texts, stats, strict=True))]
        print(json.dumps({"schema": 1, "prompt": args.prompt, "model": model_id, "engine": engine_name,
                          "mode": "instruct" if args.instruct else "raw",
                          "form": form.describe() if form else "free", "columns": cols,
                          "base": texts[0], "tuned": texts[1], "adapter": str(adapters[0]),
                          "sampling": sampling.to_dict()}, indent=2))
        return 0
    from rich.columns import Columns
    from rich.console import Console
    from rich.panel import Panel

    from poetwb.core.text import tokens

    panels = []
    for label, text, st in zip(labels, texts, stats, strict=True):
        foot = f"{st.reason} · {tokens(st.new_tokens)} · {st.tokens_per_s:.1f} tok/s · {st.by(engine_name)}"
        panels.append(Panel(text, title=label, subtitle=foot))
    Console().print(Columns(panels, equal=True, expand=True))
    if form is not None:
        for label, text, st in zip(labels, texts, stats, strict=True):
            _eprint(f"{label}: {_form_line(text, form, st)}")
    for i, pid in saved.items():
        _eprint(f"saved the poem of {labels[i]} as poem {pid} in the library")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from poetwb.core.report import build_report

    path = build_report(args.run, Path(args.output), evaluate=not args.no_eval)
    print(path)
    return 0


def _poem_ids(values: list[str]) -> list[int]:
    ids = []
    for v in values:
        if not (v.isascii() and v.isdigit()):
            raise PoetError(f"{v!r} is not a poem id (a whole number, as `poetwb poems list` shows)")
        ids.append(int(v))
    return ids


def cmd_poems_list(args: argparse.Namespace) -> int:
    from poetwb.core.library import Library, describe_adapter

    lib = Library()
    try:
        poems = lib.search(args.search or "")
    finally:
        lib.close()
    if args.json:
        print(json.dumps([p.to_dict() for p in poems], indent=2, ensure_ascii=False))
        return 0
    if not poems:
        print("no poems match" if args.search else
              "no poems yet; keep one with `poetwb generate -p '…' --save` or Save in the Compare pane")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Poems ({len(poems)})", title_justify="left")
    for col in ("id", "saved", "from", "form", "first line"):
        table.add_column(col, justify="right" if col == "id" else "left", overflow="fold")
    for p in poems:
        table.add_row(str(p.id), p.created.replace("T", " ")[:16], describe_adapter(p.adapter).replace(
            "none (base model)", "base"), p.form.split(":")[0] if p.form else "free", p.title)
    Console().print(table)
    return 0


def cmd_poems_export(args: argparse.Namespace) -> int:
    from poetwb.core.library import Library, export_markdown, export_markdown_file

    lib = Library()
    try:
        matching = lib.search(args.search or "")  # newest first
        if args.ids:  # in the order given; unknown ids are an error
            found = {p.id for p in matching}
            poems = [p for p in lib.get_exactly(_poem_ids(args.ids)) if p.id in found]
        else:
            poems = matching[::-1]  # oldest first, as they were written
    finally:
        lib.close()
    if not poems:
        raise PoetError("no poems to export" + (f" match {args.search!r}" if args.search else
                                               "; keep some with `poetwb generate … --save`"))
    out = Path(args.output)
    if args.one_file and out.suffix.lower() in {".md", ".markdown"}:
        written = [export_markdown_file(poems, out)]
    else:
        written = export_markdown(poems, out, one_file=args.one_file)
    for path in written:
        print(path)
    _eprint(f"exported {len(poems)} poem{'s' * (len(poems) != 1)} to {len(written)} file"
            f"{'s' * (len(written) != 1)}")
    return 0


def cmd_poems_delete(args: argparse.Namespace) -> int:
    from poetwb.core.library import Library

    ids = _poem_ids(args.ids)
    lib = Library()
    try:
        lib.get_exactly(ids)  # unknown ids: an error before anything is asked or deleted
        if not args.yes and sys.stdin.isatty():
            answer = input(f"delete poem{'s' * (len(ids) != 1)} {', '.join(map(str, ids))}? [y/N] ")
            if answer.strip().lower() not in {"y", "yes"}:
                print("kept")
                return 1
        n = lib.delete(ids, strict=True)
    finally:
        lib.close()
    print(f"deleted {n} poem{'s' * (n != 1)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from poetwb.serve import serve

    serve(args.host, args.port)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from poetwb.console import StepsView
    from poetwb.core import export

    export.check_format(args.format, args.quant)  # bad choices fail before anything loads
    with StepsView(f"export {args.run} as {args.format}") as view:
        result = export.export_run(args.run, args.format, args.output, stage=args.stage, quant=args.quant,
                                   force=args.force, progress=view)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"exported run {result.run_id} stage {result.stage} as {result.format} ({result.quant}) to {result.path} "
          f"in {result.seconds:.1f} s")
    for name, size in result.files.items():
        print(f"  {name:40} {_human_bytes(size) if size >= 2**20 else f'{size / 1024:.0f} KiB':>9}")
    for note in result.notes:
        print(f"note: {note}")
    if result.commands:
        print("run it with:")
        for command in result.commands:
            print(f"  {command}")
    return 0


def _export_parser(sub: Any) -> None:
    from poetwb.core.export import FORMATS, GGUF_QUANTS, HF_DTYPES

    p = sub.add_parser("export", help="merge a run's adapter into its base: HF folder, GGUF file or Ollama model",
                       description="Merge a run's LoRA adapter into its base model and write it where other tools "
                                   "read it.")
    p.add_argument("run", help="the run id (`poetwb runs`)")
    p.add_argument("--stage", type=int, choices=[1, 2], help="which stage's adapter (default: the newest)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="hf: safetensors folder for transformers; gguf: llama.cpp / LM Studio; ollama: GGUF + "
                        "Modelfile")
    p.add_argument("--quant", choices=sorted(set(GGUF_QUANTS) | set(HF_DTYPES)),
                   help="weights type: f16 (default), bf16 or q8_0 for gguf/ollama; f32 (default), f16 or bf16 "
                        "for hf")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to create")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler=cmd_export)


def cmd_tui(args: argparse.Namespace) -> int:
    from poetwb.tui.app import PoetApp

    PoetApp().run()
    return 0


# --- parser -----------------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help says its default (when it has a meaningful one); examples in the epilog keep their
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default == [] or default == argparse.SUPPRESS
                or "%(default)" in text or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with poetwb's help formatter, also for every subcommand's parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


EXAMPLES: dict[str, str] = {
    "": """examples:
  poetwb                                   open the workbench
  poetwb generate -p "The sea is blue, the sky is red"
  poetwb train --preset cpu-quick          a two-stage fine-tune of the bundled model in a few minutes
  poetwb poems list                        the poems you kept""",
    "models": "example:\n  poetwb models --json --path ~/models/my-gpt2",
    "download": "example:\n  poetwb download openai-community/gpt2",
    "generate": """examples:
  poetwb generate -p "The sea is blue, the sky is red"
  poetwb generate -a RUN --instruct -p "Write a poem about the sea" --save
  poetwb generate --form sonnet -t 0.8 --seed 7 -p "Shall I compare thee to a winter's night?"
  poetwb generate --engine llamacpp -a RUN -p "The sea is blue" --json   speed per column in the JSON""",
    "train": """examples:
  poetwb train --preset cpu-quick
  poetwb train --preset report-a --poets shakespeare,hopkins --detach
  poetwb train my.toml --corpus ~/poems/ --instructions synth --max-steps 200
  poetwb train --resume RUN""",
    "runs": "examples:\n  poetwb runs --json\n  poetwb runs delete RUN -y",
    "runs delete": "example:\n  poetwb runs delete 20261130-smollm2-ab12 -y",
    "cancel": "example:\n  poetwb cancel RUN --wait 30",
    "eval": "examples:\n  poetwb eval RUN\n  poetwb eval RUN --metrics --form sonnet --json",
    "compare": """examples:
  poetwb compare -a RUN -p "Write a poem about the sea" --instruct
  poetwb compare -a RUN -a RUN2 --form limerick -p "A cat sat" --save both""",
    "report": "example:\n  poetwb report RUN -o report.md",
    "bench": "examples:\n  poetwb bench train --tokens 2048 --json\n  poetwb bench train --profile",
    "export": """examples:
  poetwb export RUN --format hf -o my-poet              a merged model for plain transformers
  poetwb export RUN --format gguf --quant q8_0 -o my-poet-gguf
  poetwb export RUN --format ollama -o my-poet-ollama   then: ollama create my-poet -f my-poet-ollama/Modelfile""",
    "poems": """examples:
  poetwb poems list --search sea
  poetwb poems export --one-file -o poems.md
  poetwb poems delete 3 4""",
    "poems list": "examples:\n  poetwb poems list\n  poetwb poems list --search sonnet --json",
    "poems export": """examples:
  poetwb poems export --one-file -o poems.md          every poem, oldest first, in one file
  poetwb poems export 3 5 8 -o my-poems/             one Markdown file per poem in a folder
  poetwb poems export --search Dickinson --one-file -o dickinson.md""",
    "poems delete": "example:\n  poetwb poems delete 3 4 -y",
    "serve": """examples:
  poetwb serve                             then open the printed http://127.0.0.1:8000/?token=… URL
  ssh -L 8000:127.0.0.1:8000 gpu-box 'poetwb serve'   a remote training box, through an SSH tunnel
  poetwb serve --host 0.0.0.0 --port 8080  on the LAN (prints a warning: plain http)""",
}


def _finish_help(parser: argparse.ArgumentParser, name: str = "") -> None:
    """Give every command its example (EXAMPLES) and, where missing, a description (its one-line help)."""
    if name in EXAMPLES and not parser.epilog:
        parser.epilog = EXAMPLES[name]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for sub_name, sub_parser in action.choices.items():
                if not sub_parser.description:
                    sub_parser.description = helps.get(sub_name)
                _finish_help(sub_parser, f"{name} {sub_name}".strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _build_parser()
    _finish_help(parser)
    return parser


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="poetwb", description="A terminal poetry workbench. With no command, opens the workbench."
    )
    parser.add_argument("--version", action="version", version=f"poetwb {__version__}")
    parser.set_defaults(handler=cmd_tui)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the models you can pick")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--path", action="append", default=[], metavar="DIR", help="also list this local model folder")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("download", help="download a hub model into the local Hugging Face cache")
    p.add_argument("model", help="hub id, e.g. openai-community/gpt2")
    p.add_argument("--allow-pickle", action="store_true", help="also fetch pickle .bin weights (unsafe)")
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser("generate", help="generate a poem")
    _model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="first line to continue, or a request with --instruct")
    p.add_argument("--instruct", action="store_true", help="treat the prompt as an instruction (chat template)")
    _sampling_args(p)
    _form_args(p)
    _engine_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object when done instead of streaming")
    p.add_argument("--save", action="store_true", help="keep the poem in the library with its provenance")
    p.add_argument("-v", "--verbose", action="store_true", help="say how many tokens and how fast, on stderr")
    p.set_defaults(handler=cmd_generate)

    p = sub.add_parser("train", help="two-stage LoRA fine-tune (stage 1: corpus, stage 2: instructions)")
    p.add_argument("config", nargs="?", help="a TOML config (as written to a run's config.toml)")
    p.add_argument("--preset", help="start from a preset in assets/presets: poet, cpu-quick, report-a/b/c")
    p.add_argument("-m", "--model", help="base model: bundled (default), a hub id or a local folder")
    p.add_argument("--corpus", help="bundled | PATH (.txt/.md/folder/.jsonl/.csv/.parquet) | hf:DATASET_ID")
    p.add_argument("--poets", help="bundled poets, comma-separated (default shakespeare)")
    p.add_argument("--text-column", help="corpus column holding the poem (tables)")
    p.add_argument("--poet-filter", help="keep poems whose poet column contains this")
    p.add_argument("--instructions", help="synth | none | local:PATH.jsonl | conversations:PATH_OR_DATASET_ID")
    p.add_argument("--max-steps", type=int, help="cap both stages at this many optimizer steps")
    p.add_argument("--seed", type=int, help="random seed for data splits, LoRA init and shuffling "
                   "(default: the preset's)")
    p.add_argument("--run-id", help="name the run (default: date-model-random)")
    p.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"],
                   help="recompute layers in the backward pass: less memory, slower steps, same results; on: "
                   "every layer (~1.45x); auto (default): the fewest layers that keep the activations within the "
                   "weights' size and a quarter of the free memory (the poet preset's stage 1: 14 of 30, 1.8 GB, "
                   "~1.25x); off: none (2.1 GB)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--detach", action="store_true", help="train in a background process and return")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (run id, path, pid, state) instead of progress")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("runs", help="list training runs; `runs delete RUN` removes one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    d = runs_sub.add_parser("delete", help="delete a run with its adapters and checkpoints (refused while it runs)")
    d.add_argument("run", help="the run id, as `poetwb runs` lists it")
    d.add_argument("-y", "--yes", action="store_true", help="do not ask (asked only when stdin is a terminal)")
    d.set_defaults(handler=cmd_runs_delete)

    p = sub.add_parser("cancel", help="stop a running job cleanly (keeps its checkpoint)")
    p.add_argument("run", help="the run id, as `poetwb runs` lists it")
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for it to stop")
    p.add_argument("--json", action="store_true", help="print one JSON object (run id, path, pid, state)")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("eval", help="held-out loss/perplexity before and after each stage; poetic metrics")
    p.add_argument("run", help="the run id, as `poetwb runs` lists it")
    p.add_argument("--metrics", action="store_true", help="also generate for a prompt set and measure poetry")
    p.add_argument("--prompts", help="a prompts TOML (default: assets/prompts.toml)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="tokens per generated poem (--metrics)")
    p.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass for the held-out loss")
    _form_args(p)
    _engine_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("compare", help="base vs up to four fine-tuned runs side by side (one copy of the weights)")
    p.add_argument("-m", "--model", default=None, help="base model (default: the one the runs trained)")
    p.add_argument("-a", "--adapter", required=True, action="append",
                   help="a run id or adapter folder; repeat for up to four runs")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="weights (auto: bf16 where the hardware has it natively, else int8 copies for decoding on "
                   "AVX2 CPUs, else fp32; fp32: exact)")
    p.add_argument("-p", "--prompt", required=True, help="first line to continue, or a request with --instruct")
    p.add_argument("--instruct", action="store_true", help="treat the prompt as an instruction (chat template)")
    _form_args(p)
    _sampling_args(p)
    _engine_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object when done")
    p.add_argument("--save", choices=["base", "tuned", "both"],
                   help="keep the base poem, every run's poem, or all of them in the library")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("report", help="write a Markdown report of a run")
    p.add_argument("run", help="the run id, as `poetwb runs` lists it")
    p.add_argument("-o", "--output", default="report.md", help="the Markdown file to write")
    p.add_argument("--no-eval", action="store_true", help="do not compute missing eval/metrics")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("bench", help="benchmarks that print figures")
    p.add_argument("what", choices=["train"], help="train: the report's recipe vs poetwb's default")
    p.add_argument("-m", "--model", default="bundled", help="base model: bundled, a hub id or a local folder")
    p.add_argument("--poets", help="bundled poets (default shakespeare)")
    p.add_argument("--tokens", type=int, default=4096, help="useful training tokens per leg")
    p.add_argument("--profile", action="store_true", help="also print where a training step's time goes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_bench)

    _poems_parser(sub)

    p = sub.add_parser("serve", help="serve the workbench to a web browser (one app per tab, access token in the URL)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on; anything but loopback is reachable from other machines")
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    p.set_defaults(handler=cmd_serve)


    _export_parser(sub)
    return parser


def _poems_parser(sub: Any) -> None:
    p = sub.add_parser("poems", help="the poem library from scripts: list, export to Markdown, delete")
    p.set_defaults(handler=cmd_poems_list, search=None, json=False)  # `poetwb poems` alone lists them
    poems_sub = p.add_subparsers(dest="poems_command", metavar="ACTION")
    d = poems_sub.add_parser("list", help="list saved poems, newest first")
    d.add_argument("--search", metavar="Q", help="only poems whose text, prompt, model, run or form contains Q")
    d.add_argument("--json", action="store_true", help="every poem with its provenance as JSON")
    d.set_defaults(handler=cmd_poems_list)
    d = poems_sub.add_parser("export", help="write poems to Markdown (renders the same in CommonMark and on GitHub)")
    d.add_argument("ids", nargs="*", metavar="ID", help="poem ids to export (default: every poem, oldest first)")
    d.add_argument("--search", metavar="Q", help="only poems whose text, prompt, model, run or form contains Q")
    d.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="a folder (one file per poem, or poems.md with --one-file), or a .md file with --one-file")
    d.add_argument("--one-file", action="store_true", help="all the poems in one Markdown file")
    d.set_defaults(handler=cmd_poems_export)
    d = poems_sub.add_parser("delete", help="delete poems by id (an unknown id deletes nothing)")
    d.add_argument("ids", nargs="+", metavar="ID", help="poem ids, as `poetwb poems list` shows them")
    d.add_argument("-y", "--yes", action="store_true", help="do not ask (asked only when stdin is a terminal)")
    d.set_defaults(handler=cmd_poems_delete)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="bundled (default), a hub id, or a local folder")
    p.add_argument("-a", "--adapter", default=None, help="a LoRA adapter folder or a run id")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="weights (auto: bf16 where the hardware has it natively, else int8 copies for decoding on "
                   "AVX2 CPUs, else fp32; fp32: exact)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model's own code (unsafe)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle .bin weights (unsafe)")


def _engine_args(p: argparse.ArgumentParser) -> None:
    from poetwb.core.llamacpp import ENGINES

    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto: llama.cpp when installed (pip install 'poetwb[llamacpp]'), else torch; --dtype "
                   "applies to torch only")


def _form_args(p: argparse.ArgumentParser) -> None:
    from poetwb.core import forms

    p.add_argument("--form", default="free", choices=forms.FORM_NAMES,
                   help="free verse, or a form written line by line with rhyme and syllable checks")
    p.add_argument("--scheme", help="a custom rhyme scheme, spaces between stanzas, e.g. 'ABAB CDCD'")
    p.add_argument("--syllables", help="syllables per line: 10, a range 8-9, or one per line 8,8,5,5,8")
    p.add_argument("--stanzas", type=int, help="stanzas for quatrains, couplets for couplets")
    p.add_argument("-k", "--candidates", type=int, default=forms.DEFAULT_CANDIDATES,
                   help="candidate lines sampled per line in one batch (form only)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    from poetwb.core.config import SamplingConfig

    d = SamplingConfig()
    p.add_argument("-t", "--temperature", type=float, default=d.temperature,
                   help="softmax temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling: keep this much probability mass")
    p.add_argument("--top-k", type=int, default=d.top_k, help="keep only the k likeliest tokens; 0 = off")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty,
                   help="> 1 discourages repeating tokens; 1 = off")
    p.add_argument("-n", "--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens to generate at most")
    p.add_argument("-s", "--seed", type=int, default=d.seed, help="same seed and settings, same poem")


def _posix() -> bool:
    return os.name == "posix"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _posix():  # os.kill(pid, 0) would end a training job on Windows, and fcntl is missing there
        _eprint("error: native Windows is not supported yet (the run lock and process checks are POSIX); "
                "run poetwb in WSL2")
        return 1
    if args.command is not None:
        _quiet_libraries()
    try:
        return args.handler(args)
    except PoetError as exc:
        _eprint(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _eprint("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
