"""`poetwb report RUN -o report.md`: one readable Markdown file per run — config, loss curves (a table and a PNG
rendered offline with matplotlib), the held-out loss table, poetic metrics, the vote tally, side-by-side samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poetwb.core import runs
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_write_text


def loss_plot(records: list[dict[str, Any]], target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offset = max((r["step"] for r in records if r.get("stage") == 1), default=0)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for stage in (1, 2):
        for key, style, name in (("loss", "-", "train"), ("eval_loss", "o--", "val")):
            pts = [(r["step"] + (offset if stage == 2 else 0), r[key]) for r in records
                   if r.get("stage") == stage and key in r]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, label=f"stage {stage} {name}")
    ax.set_xlabel("step (stage 2 continues after stage 1)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(target)
    return target


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_report(run_id: str, output: Path, samples: int = 2, evaluate: bool = True) -> Path:
    from poetwb.core import evaluate as ev
    from poetwb.core.votes import Votes

    folder = runs.open_run(run_id)
    status = runs.read_status(folder)
    records, _ = runs.read_metrics(folder)
    if not records:
        raise PoetError(f"run {run_id!r} has no metrics yet; nothing to report")
    eval_result = ev.read_saved(folder, "eval.json")
    if eval_result is None and evaluate:
        eval_result = ev.evaluate_run(run_id)
    metrics_result = ev.read_saved(folder, "metrics.json")
    if metrics_result is None and evaluate:
        metrics_result = ev.poetic_metrics(run_id, ev.load_prompts(None)[:samples * 2], max_new_tokens=64)
    image = loss_plot(records, output.with_name(output.stem + "-loss.png"))
    out = [f"# poetwb run `{run_id}`", "",
           f"State **{status.get('state')}**, model `{status.get('model_id', '')}`, "
           f"stage {status.get('stage')}, step {status.get('step')}/{status.get('total_steps')}.", ""]
    out += ["## Config", "", "```toml", (folder / "config.toml").read_text(encoding="utf-8").strip(), "```", ""]
    out += ["## Loss curves", "", f"![loss curves]({image.name})", ""]
    rows = [[r["stage"], r["step"], r.get("loss", ""), r.get("eval_loss", r.get("test_loss", "")),
             r.get("tokens_per_s", "")] for r in records if any(k in r for k in ("loss", "eval_loss", "test_loss"))]
    out += [_table(["stage", "step", "train loss", "held-out loss", "tokens/s"], rows), ""]
    out += ["## Held-out loss", ""]
    if eval_result:
        splits = sorted({s for m in eval_result["models"].values() for s in m})
        out.append(_table(["model", *[f"{s} loss (ppl)" for s in splits]], [
            [name, *[f"{m[s]['loss']:.3f} ({m[s]['perplexity']:.1f})" if s in m else "" for s in splits]]
            for name, m in eval_result["models"].items()]))
    else:
        out.append("Not evaluated yet: run `poetwb eval " + run_id + "`.")
    out += ["", "## Poetic metrics", ""]
    if metrics_result:
        keys = ["lines_per_poem", "syllables_per_line", "syllables_per_line_sd", "end_rhyme_rate", "distinct_1",
                "distinct_2", "vocab_overlap", "topic_hit_rate"]
        out.append(_table(["", *keys], [[name, *[row.get(k) if row.get(k) is not None else "" for k in keys]]
                                        for name, row in metrics_result["table"].items()]))
    else:
        out.append("Not measured yet: run `poetwb eval " + run_id + " --metrics`.")
    votes = Votes()
    tallies = votes.of_run(run_id)
    votes.close()
    out += ["", "## Blind A/B votes", ""]
    if tallies:
        rows = []
        for t in tallies:
            lo, hi = t.interval
            adapter = t.run.partition("/")[2] or "(stage not recorded)"
            rows.append([adapter, t.votes, t.tuned, t.base, t.ties, t.win_rate, f"{lo:.2f}–{hi:.2f}"])
        out.append(_table(["adapter", "votes", "tuned wins", "base wins", "ties", "tuned win rate", "95 % interval"],
                          rows))
    else:
        out.append("No votes yet: use the blind A/B mode of the Compare pane.")
    out += ["", "## Side-by-side samples", ""]
    if metrics_result:
        from poetwb.core.library import escape_verse

        for i, p in enumerate(metrics_result["prompts"][:samples]):
            out += [f"### {p['mode']}: {p['text']}", "", "**base**", "", escape_verse(
                metrics_result["generations"]["base"][i]) or "*(empty)*", "", "**fine-tuned**", "",
                escape_verse(metrics_result["generations"]["tuned"][i]) or "*(empty)*", ""]
    atomic_write_text(output, "\n".join(out) + "\n")
    return output
