"""Form-aware generation measured: base vs tuned, free verse vs a form, on the seven-prompt set, in one run.

For each run given: `evaluate.poetic_metrics` twice on the run's base model and adapter — free verse (max new tokens
160, about a sonnet's length) and the form (k candidates per line) — then one table with the shares of poems with
exactly the form's line count, of required rhyme pairs that rhyme and of lines within one syllable (metrics.py's own
checker, not the generator's scorer), lines per poem, words in the poet's vocabulary, held-out loss (from
the reference run's — the first RUN's — validation poems in 256-token blocks, the same set for every run) and seconds
per poem; and the time ratio form / free. Prints figures; asserts nothing.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_forms.py RUN [RUN …] [--form sonnet] [--candidates 8] [--engine auto]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sweep import cpu_header


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="runs measured free and in the form")
    parser.add_argument("--free-only", action="append", default=[], metavar="RUN",
                        help="also measure this run in free verse only (e.g. a cpu-quick run, for the preset table)")
    parser.add_argument("--form", default="sonnet")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "llamacpp"],
                        help="the engine that writes the poems (auto: llama.cpp where it is installed)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from poetwb.core import evaluate, forms, metrics

    form = forms.make_form(args.form)
    prompts = evaluate.load_prompts(None)
    print(cpu_header(), flush=True)
    print(f"{len(prompts)} prompts; engine {args.engine}; form {form.describe()}; k = {args.candidates} candidates "
          "per line; form shares "
          "by metrics.py's checker (free verse is measured against the same form)", flush=True)
    print(f"{'run':18} {'model':6} {'mode':7} {'exact lines':>11} {'rhymes':>7} {'syl ±1':>7} {'lines':>6} "
          f"{'vocab':>6} {'held-out':>8} {'s/poem':>7}", flush=True)
    results = {}
    for run in args.runs + args.free_only:
        losses = common_val_loss(run, args.runs[0])
        free = evaluate.poetic_metrics(run, prompts, max_new_tokens=160, engine=args.engine)
        shaped = None if run in args.free_only else evaluate.poetic_metrics(
            run, prompts, max_new_tokens=160, form=form, candidates=args.candidates, engine=args.engine)
        results[run] = {"held_out": losses, "free": free, "form": shaped}
        for key in ("base", "tuned"):
            val = losses[key]
            for mode, result in (("free", free), (args.form, shaped)):
                if result is None:
                    continue
                row = result["table"][key]
                share = metrics.form_summary([metrics.form_report(p, form) for p in result["generations"][key]])
                print(f"{run[:18]:18} {key:6} {mode[:7]:7} {share['exact_lines']:11.0%} "
                      f"{share['rhyme_pairs_held']:7.0%} {share['syllables_within_one']:7.0%} "
                      f"{row['lines_per_poem']:6.1f} {row.get('vocab_overlap', 0):6.2f} {val:8.3f} "
                      f"{row['seconds_per_poem']:7.1f}", flush=True)
            if shaped is not None:
                ratio = shaped["table"][key]["seconds_per_poem"] / free["table"][key]["seconds_per_poem"]
                print(f"{'':18} {key:6} {args.form} / free time per poem: {ratio:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": cpu_header(), "results": results}, indent=2))


def common_val_loss(run: str, reference: str) -> dict[str, float]:
    """Held-out loss of the base model and of the run's last adapter on one set for every run: the reference
    run's stage-1 validation poems packed in 256-token blocks (runs with other block lengths stay comparable)."""
    from poetwb.core import data, runs
    from poetwb.core.bench import held_out_loss
    from poetwb.core.evaluate import load_run_model

    ref = runs.read_config(runs.open_run(reference))
    model, tokenizer, names = load_run_model(runs.open_run(run))
    split = data.split_poems_dataset(data.load_poems(ref.corpus), ref.seed)
    blocks = data.pack(tokenizer, split["val"], 256)
    model.set_adapter(names[-1])
    tuned = held_out_loss(model, blocks)
    with model.disable_adapter():
        base = held_out_loss(model, blocks)
    return {"base": base, "tuned": tuned}


if __name__ == "__main__":
    main()
