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
        print(json.dumps([e.to_dict() for e in entries], indent=2))
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


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    from poetwb.core import bundled, generate, models

    sampling = _sampling(args)  # validate before any slow loading
    if not args.prompt.strip():
        raise PoetError("the prompt is empty; pass -p 'The sea is blue, the sky is red' or similar")
    if args.trust_remote_code:
        _eprint("warning: --trust-remote-code runs the model's own Python code on this machine")
    if (args.model is None or args.model in bundled.BUNDLED_ALIASES) and not bundled.is_converted():
        _eprint("converting the bundled model to safetensors, once (~40 s)…")
    loaded = models.load(args.model, args.adapter, trust_remote_code=args.trust_remote_code,
                         allow_pickle=args.allow_pickle, dtype=args.dtype)
    start = time.perf_counter()
    if args.json:
        result = generate.generate(loaded, args.prompt, sampling, instruct=args.instruct)
        print(json.dumps({
            "model": loaded.model_id, "adapter": str(loaded.adapter) if loaded.adapter else None,
            "prompt": args.prompt, "mode": "instruct" if args.instruct else "raw", "text": result.text,
            "new_tokens": result.new_tokens, "seconds": round(result.seconds, 3), "sampling": sampling.to_dict(),
        }, indent=2))
        return 0
    if not args.instruct:
        print(args.prompt, end="", flush=True)
    for chunk in generate.stream(loaded, args.prompt, sampling, instruct=args.instruct):
        print(chunk, end="", flush=True)
    print()
    if args.verbose:
        _eprint(f"{time.perf_counter() - start:.1f} s")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from poetwb.tui.app import PoetApp

    PoetApp().run()
    return 0


# --- parser -----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    p.add_argument("--json", action="store_true", help="print one JSON object when done instead of streaming")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(handler=cmd_generate)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="bundled (default), a hub id, or a local folder")
    p.add_argument("-a", "--adapter", default=None, help="a LoRA adapter folder or a run id")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="weights dtype (auto: bf16 where the hardware has it natively)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model's own code (unsafe)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle .bin weights (unsafe)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    from poetwb.core.config import SamplingConfig

    d = SamplingConfig()
    p.add_argument("-t", "--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--top-k", type=int, default=d.top_k, help="0 = off")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    p.add_argument("-n", "--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("-s", "--seed", type=int, default=d.seed)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
