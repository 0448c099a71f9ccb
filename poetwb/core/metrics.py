"""Poetic metrics without a model: lines, syllables per line (CMU dictionary via `pronouncing`, with a vowel-group
estimate for unknown words), end-rhyme rate, distinct-n, vocabulary overlap with the poet, topic words."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def words(text: str) -> list[str]:
    return [w.lower().strip("'") for w in _WORD.findall(text) if w.strip("'")]


def stanzas(poem: str) -> list[list[str]]:
    blocks = re.split(r"\n\s*\n", poem.strip())
    return [[line for line in b.splitlines() if words(line)] for b in blocks if b.strip()]


@lru_cache(maxsize=50_000)
def syllables(word: str) -> int:
    import pronouncing

    phones = pronouncing.phones_for_word(word.lower())
    if phones:
        return pronouncing.syllable_count(phones[0])
    return estimate_syllables(word)


def estimate_syllables(word: str) -> int:
    """Vowel groups, minus a silent final e; at least one."""
    w = word.lower().strip("'")
    groups = re.findall(r"[aeiouy]+", w)
    n = len(groups)
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(1, n)


@lru_cache(maxsize=50_000)
def _rhyme_key(word: str) -> str:
    import pronouncing

    phones = pronouncing.phones_for_word(word.lower())
    if phones:
        return pronouncing.rhyming_part(phones[0])
    return word.lower()[-3:]


def rhymes(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a != b and _rhyme_key(a) == _rhyme_key(b)


def end_rhyme_rate(poem: str) -> tuple[int, int]:
    """(rhyming pairs, pairs) over line pairs one or two apart within a stanza (couplets and alternate rhyme)."""
    hits = total = 0
    for stanza in stanzas(poem):
        ends = [words(line)[-1] for line in stanza]
        for i in range(len(ends)):
            for j in (i + 1, i + 2):
                if j < len(ends):
                    total += 1
                    hits += rhymes(ends[i], ends[j])
    return hits, total


def distinct_n(texts: Iterable[str], n: int) -> float:
    grams: list[tuple[str, ...]] = []
    for text in texts:
        w = words(text)
        grams.extend(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def topic_words(prompt: str) -> list[str]:
    """Content words a request asks for: what follows 'about'/'on', else the prompt's longer words."""
    from poetwb.core.data import STOPWORDS

    low = prompt.lower()
    m = re.search(r"\b(?:about|on|of)\b(.*)", low)
    target = m.group(1) if m else low
    return [w for w in words(target) if w not in STOPWORDS and len(w) > 2 and w not in {"poem", "write", "sonnet"}]


def summarize(poems: list[str], corpus_vocab: set[str] | None = None,
              prompts: list[str] | None = None) -> dict[str, Any]:
    """The metric table row for a set of poems (and, for instruction prompts, whether their topics appear)."""
    line_counts, syl_per_line = [], []
    hits = pairs = 0
    for poem in poems:
        lines = [line for s in stanzas(poem) for line in s]
        line_counts.append(len(lines))
        syl_per_line += [sum(syllables(w) for w in words(line)) for line in lines]
        h, t = end_rhyme_rate(poem)
        hits, pairs = hits + h, pairs + t
    tokens = [w for p in poems for w in words(p)]
    row: dict[str, Any] = {
        "poems": len(poems),
        "lines_per_poem": statistics.fmean(line_counts) if line_counts else 0.0,
        "syllables_per_line": statistics.fmean(syl_per_line) if syl_per_line else 0.0,
        "syllables_per_line_sd": statistics.pstdev(syl_per_line) if len(syl_per_line) > 1 else 0.0,
        "end_rhyme_rate": hits / pairs if pairs else 0.0,
        "distinct_1": distinct_n(poems, 1),
        "distinct_2": distinct_n(poems, 2),
    }
    if corpus_vocab is not None:
        row["vocab_overlap"] = sum(w in corpus_vocab for w in tokens) / len(tokens) if tokens else 0.0
    if prompts is not None:
        asked = [(topic_words(p), set(words(poem))) for p, poem in zip(prompts, poems, strict=True)]
        asked = [(t, w) for t, w in asked if t]
        row["topic_hit_rate"] = (sum(any(x in w for x in t) for t, w in asked) / len(asked)) if asked else None
    return row


def form_report(poem: str, form: Any) -> dict[str, Any]:
    """How well a poem keeps a form (a `forms.Form`), by this module's own checks — independent of the generator's
    scorer (first CMU pronunciation only, the rhyming part compared as is), so a poem does not pass by
    construction: lines, required rhyme pairs that rhyme, lines within one syllable of their range."""
    lines = [line for s in stanzas(poem) for line in s]
    ends = [words(line)[-1] for line in lines]
    pairs = [(a, b) for a, b in form.rhyme_pairs() if b < len(lines)]
    held = sum(rhymes(ends[a], ends[b]) for a, b in pairs)
    counts = [sum(syllables(w) for w in words(line)) for line in lines]
    within = 0
    for count, spec in zip(counts, form.lines, strict=False):
        lo, hi = spec.syllables
        within += lo - 1 <= count <= hi + 1
    return {"lines": len(lines), "lines_required": len(form.lines), "rhyme_pairs": len(form.rhyme_pairs()),
            "rhymes_held": held, "syllables": counts, "within_one": within}


def form_summary(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Shares over a set of poems: exactly the form's line count, required rhyme pairs that rhyme, lines within
    one syllable of their target."""
    n = len(reports)
    pairs = sum(r["rhyme_pairs"] for r in reports)
    lines = sum(min(r["lines"], r["lines_required"]) for r in reports)
    return {
        "exact_lines": sum(r["lines"] == r["lines_required"] for r in reports) / n if n else 0.0,
        "rhyme_pairs_held": sum(r["rhymes_held"] for r in reports) / pairs if pairs else 0.0,
        "syllables_within_one": sum(r["within_one"] for r in reports) / lines if lines else 0.0,
    }
