"""Evaluation results as rich tables, shared by `poetwb eval` and the Train pane so both show the same figures.

Kept narrow on purpose: the held-out loss table (base / stage 1 / stage 2 against the sets, loss and perplexity) and
the poetic metrics table fit side by side in 120 columns with every number visible.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

SPLIT_ORDER = ["stage1_val", "stage2_val", "stage2_test"]
MODEL_NAMES = {"base": "base", "stage1": "stage 1", "stage2": "stage 2"}
METRIC_COLUMNS = [("lines_per_poem", "lines"), ("syllables_per_line", "syl/ln"), ("end_rhyme_rate", "rhyme"),
                  ("distinct_1", "dist-1"), ("distinct_2", "dist-2"), ("vocab_overlap", "vocab"),
                  ("topic_hit_rate", "topic")]
METRICS_CAPTION = ("lines per poem · syllables per line · end-rhyme rate · distinct words / word pairs · share of "
                   "words in the poet's vocabulary · requested topic present · poet: the poet's held-out poems")


def _table(title: str, caption: str = "") -> Table:
    return Table(title=title, caption=caption or None, title_justify="left", caption_justify="left",
                 box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False)


def split_names(result: dict[str, Any]) -> list[str]:
    present = {s for row in result["models"].values() for s in row}
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def loss_table(result: dict[str, Any], title: str = "held-out loss (perplexity)") -> Table:
    """Rows base / stage 1 / stage 2, one column per held-out set; 'loss (perplexity)' in each cell."""
    splits = split_names(result)
    table = _table(title)
    table.add_column("model", no_wrap=True)
    for s in splits:
        table.add_column(s.replace("_", " ").replace("stage", "stage "), justify="right", no_wrap=True)
    for name, row in result["models"].items():
        cells = []
        for s in splits:
            if s not in row:
                cells.append("")
                continue
            ppl = row[s]["perplexity"]
            cells.append(f"{row[s]['loss']:.3f} ({ppl:.1f})" if ppl < 1e5 else f"{row[s]['loss']:.3f} (–)")
        table.add_row(MODEL_NAMES.get(name, name), *cells)
    return table


def metrics_table(result: dict[str, Any], title: str = "poetic metrics", caption: bool = True) -> Table:
    """Rows base / tuned / the poet's held-out poems; short headers, explained in the caption (METRICS_CAPTION)."""
    table = _table(title, METRICS_CAPTION if caption else "")
    table.add_column("", no_wrap=True)
    for _, short in METRIC_COLUMNS:
        table.add_column(short, justify="right", no_wrap=True)
    order = ["base", "tuned"]
    rows = sorted(result["table"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    for name, row in rows:
        label = "poet" if name.startswith("poet") else name
        table.add_row(label, *["" if row.get(k) is None else f"{row[k]:.2f}" for k, _ in METRIC_COLUMNS])
    return table


FORM_COLUMNS = [("exact_lines", "exact lines"), ("rhyme_pairs_held", "rhymes held"),
                ("syllables_within_one", "syllables ±1"), ("seconds_per_poem", "s/poem")]


def form_table(result: dict[str, Any]) -> Table:
    """How well base and tuned kept the form: shares of poems with exactly its lines, of required rhyme pairs that
    rhyme, of lines within one syllable of their target (metrics.form_report's checker), and seconds per poem."""
    table = _table(f"form: {result['form']}, k = {result['candidates']}")
    table.add_column("", no_wrap=True)
    for _, short in FORM_COLUMNS:
        table.add_column(short, justify="right", no_wrap=True)
    for name in ("base", "tuned"):
        row = result["table"][name]
        table.add_row(name, *[f"{row[k]:.1f}" if k == "seconds_per_poem" else f"{row[k]:.0%}"
                              for k, _ in FORM_COLUMNS])
    return table
