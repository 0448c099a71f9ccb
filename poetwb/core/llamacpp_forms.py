"""The llama.cpp engine's side of form poems (forms.LineModel): k candidate lines as k sequences of one context,
decoded together one batched step per token, with the syllable rule and transformers' sampling order in numpy.

Why: a form poem samples k lines for every line it keeps, so each step weighs k rows; on the torch path a sonnet
in a Compare column takes tens of seconds on two cores. llama.cpp decodes k rows of the bundled Q4_1 model in about
the time torch decodes one. The method is forms.py's, unchanged: same rule, same scores, same ranking; only the
model calls differ.

- The poem's tokens live on sequence 0, all but its last token decoded. For a line, sequences 1..k-1 get a copy of
  it (shared cells: the context keeps one pool of cells for all sequences), and each step decodes one token for
  every row still writing, in one batch.
- A rhymed variant needs the model's view just before a candidate's last word: that row's cells from there on are
  dropped and the word's preceding token decoded again, all rows in one batch.
- After a line is chosen the candidates' cells go and the chosen line is decoded on sequence 0.
- Sampling per row follows transformers' order: repetition penalty over the poem and the line so far, the syllable
  rule, temperature, top-k, top-p, a draw from a numpy generator seeded by the poem's seed (one per column, so a
  column's poem does not depend on the others).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from poetwb.core import cpu_share, forms
from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError
from poetwb.core.forms import Candidate, LineSpec, TokenClasses, banned_next, max_line_tokens

_NUCLEUS_FIRST = 512
"""top-p without top-k: the nucleus is looked for among this many best tokens first (a full sort only when they
do not reach top_p)."""


def vocabulary(engine: Any) -> tuple[TokenClasses, list[bytes]]:
    """forms.TokenClasses of the engine's vocabulary, and each token's bytes (built once per engine)."""
    cached = getattr(engine, "_form_vocabulary", None)
    if cached is None:
        lib, vocab = engine.lib, engine.vocab
        pieces = [engine.piece(i) for i in range(engine.n_vocab)]
        special = {i for i in range(engine.n_vocab) if lib.llama_vocab_is_control(vocab, i)
                   or lib.llama_vocab_is_eog(vocab, i)}
        texts = [p.decode("utf-8", "replace") for p in pieces]
        cached = engine._form_vocabulary = (forms.classes_from_texts(texts, special), pieces)
    return cached


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum()))


def distribution(logits: np.ndarray, seen: np.ndarray, bans: list[np.ndarray],
                 sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """The tokens a row may draw and their probabilities, as transformers computes them: repetition penalty on the
    `seen` ids, the banned tokens out, temperature, top-k, top-p (at temperature 0: the one greedy token)."""
    x = logits.astype(np.float32, copy=True)
    if sampling.repetition_penalty != 1.0 and seen.size:
        values = x[seen]
        x[seen] = np.where(values < 0, values * sampling.repetition_penalty, values / sampling.repetition_penalty)
    for ban in bans:
        x[ban] = -np.inf
    if sampling.temperature == 0:
        return np.array([int(np.argmax(x))]), np.ones(1)
    x /= sampling.temperature
    n = x.shape[0]
    kept = None  # ids top-k keeps (None: all)
    if sampling.top_k and sampling.top_k < n:
        kept = np.argpartition(x, n - sampling.top_k)[n - sampling.top_k:]
    if sampling.top_p < 1:
        norm = _logsumexp(x if kept is None else x[kept])
        if kept is not None:
            pool = kept
        elif n <= _NUCLEUS_FIRST:
            pool = np.arange(n)
        else:
            pool = np.argpartition(x, n - _NUCLEUS_FIRST)[n - _NUCLEUS_FIRST:]
        pool = pool[np.argsort(-x[pool], kind="stable")]
        probs = np.exp(x[pool] - norm)
        if kept is None and pool.size < n and probs.sum() < sampling.top_p:  # the nucleus is wider: sort all
            pool = np.argsort(-x, kind="stable")
            probs = np.exp(x[pool] - norm)
        before = np.cumsum(probs) - probs  # transformers keeps a token while the mass above it is < top_p
        keep = before < sampling.top_p
        keep[0] = True
        kept = pool[keep]
    if kept is None:
        kept = np.arange(n)
    kept = kept[np.isfinite(x[kept])]
    weights = np.exp(x[kept] - x[kept].max())
    return kept, weights / weights.sum()


def pick(logits: np.ndarray, seen: np.ndarray, bans: list[np.ndarray], sampling: SamplingConfig,
         rng: np.random.Generator) -> int:
    """One token drawn from `distribution` (one uniform number from rng per draw)."""
    ids, probs = distribution(logits, seen, bans, sampling)
    if ids.size == 1:
        return int(ids[0])
    index = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return int(ids[min(index, ids.size - 1)])


class LlamaLines:
    """forms.LineModel on one llama.cpp context (one column: the base, or one adapter) with k sequences."""

    def __init__(self, engine: Any, ctx: Any, n_seq: int, n_batch: int = 512) -> None:
        self.engine = engine
        self.lib = engine.lib
        self.ctx = ctx
        self.mem = self.lib.llama_get_memory(ctx)
        self.n_seq = n_seq
        self.n_batch = n_batch
        self.batch = self.lib.llama_batch_init(n_batch, 0, n_seq)
        self.classes, self.pieces = vocabulary(engine)
        self.ids: list[int] = []
        self.rng = np.random.default_rng(0)

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None

    # --- text ---

    def encode(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def encode_plain(self, text: str) -> list[int]:
        return self.engine.tokenize(text, plain=True)

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids if not self.classes.special[i]).decode("utf-8", "replace")

    # --- the poem ---

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def start(self, ids: list[int]) -> None:
        self.lib.llama_memory_clear(self.mem, True)
        self.ids = list(ids)
        if len(self.ids) > 1:
            self._decode(self.ids[:-1], list(range(len(self.ids) - 1)), [0] * (len(self.ids) - 1), last_only=True)

    def extend(self, ids: list[int]) -> None:
        self._drop_rows()
        old = len(self.ids)
        self.ids.extend(ids)
        feed = self.ids[old - 1: -1]
        if feed:
            self._decode(feed, list(range(old - 1, old - 1 + len(feed))), [0] * len(feed), last_only=True)

    def context_size(self) -> int:
        return self.engine.n_ctx_train

    def _drop_rows(self) -> None:
        """Back to the poem alone: the candidates' sequences emptied, sequence 0 without the last token's cell."""
        for seq in range(1, self.n_seq):
            self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
        self.lib.llama_memory_seq_rm(self.mem, 0, len(self.ids) - 1, -1)

    def _decode(self, tokens: list[int], positions: list[int], seqs: list[int], last_only: bool = False) -> Any:
        """Decode tokens (in chunks of the batch's size); the logits of every token, as an array of rows, unless
        last_only (then only the last token's, and nothing is returned)."""
        lib, batch = self.lib, self.batch
        out = []
        for begin in range(0, len(tokens), self.n_batch):
            chunk = range(begin, min(begin + self.n_batch, len(tokens)))
            for j, i in enumerate(chunk):
                batch.token[j] = tokens[i]
                batch.pos[j] = positions[i]
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seqs[i]
                batch.logits[j] = (i == len(tokens) - 1) if last_only else 1
            batch.n_tokens = len(chunk)
            if lib.llama_decode(self.ctx, batch) != 0:
                raise PoetError("llama.cpp failed to decode a line (the context is full?); use --engine torch")
            if not last_only:
                rows = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx), shape=(len(chunk), self.engine.n_vocab))
                out.append(rows.copy())
        return None if last_only else np.concatenate(out)

    # --- lines ---

    def sample(self, spec: LineSpec, k: int, sampling: SamplingConfig, stop: threading.Event) -> list[Candidate]:
        if k > self.n_seq:
            raise PoetError(f"this context holds {self.n_seq} candidate lines, asked for {k}")
        classes = self.classes
        self._drop_rows()
        n = len(self.ids)
        for seq in range(1, k):
            self.lib.llama_memory_seq_cp(self.mem, 0, seq, -1, -1)
        limit = max_line_tokens(spec)
        seen = np.unique(np.asarray(self.ids, dtype=np.int64))
        lines: list[list[int]] = [[] for _ in range(k)]
        logps: list[list[float]] = [[] for _ in range(k)]
        ended = [False] * k
        live = list(range(k))
        while live and not stop.is_set():
            rows = list(live)
            last = [lines[r][-1] if lines[r] else self.ids[-1] for r in rows]
            logits = self._decode(last, [n - 1 + len(lines[r]) for r in rows], rows)
            for j, r in enumerate(rows):
                bans = [classes.never]
                ban = banned_next(classes, self.decode(lines[r]), spec.syllables)
                if ban is not None:
                    bans.append(ban)
                own = np.union1d(seen, lines[r]) if lines[r] else seen
                token = pick(logits[j], own, bans, sampling, self.rng)
                lines[r].append(token)
                logps[r].append(float(logits[j][token]) - _logsumexp(logits[j]))
                if classes.newline[token]:
                    ended[r] = True
                    live.remove(r)
                elif len(lines[r]) >= limit:
                    live.remove(r)
        return [Candidate(self.decode(lines[r]).split("\n")[0].strip(), lines[r], sum(logps[r]), len(lines[r]),
                          ended[r], token_logps=logps[r], row=r) for r in range(k)]

    def next_logps(self, bodies: list[tuple[Candidate, int]]) -> list[Any]:
        n = len(self.ids)
        tokens, positions, seqs = [], [], []
        for cand, cut in bodies:
            position = n + cut - 1  # where the token before the last word sits in the candidate's sequence
            self.lib.llama_memory_seq_rm(self.mem, cand.row, position, -1)
            tokens.append(cand.token_ids[cut - 1])
            positions.append(position)
            seqs.append(cand.row)
        logits = self._decode(tokens, positions, seqs)
        return [row - _logsumexp(row) for row in logits]


def form_columns(engine: Any, prompt: str, sampling: SamplingConfig, layout: list[int | None], instruct: bool,
                 form: forms.Form, candidates: int, cancel: threading.Event | None = None,
                 stats: list[Any] | None = None) -> Iterator[tuple[int, str]]:
    """generate.columns with a form, on the llama.cpp engine: each column (the base, or an adapter's index) writes
    its poem a line at a time in turn; a chunk is a whole line with its newline (two at a stanza break)."""
    from poetwb.core.generate import format_prompt

    k = forms.candidates_per_line(candidates, sampling)  # the contexts are sized for k sequences
    text = format_prompt(engine.template, prompt, instruct)
    prefilled = None if instruct else forms.prompt_lines(prompt)
    line = max(max_line_tokens(s) for s in form.lines) + 1
    # cells: the poem (each line within its token limit, plus its line break) and k candidate lines
    poem = len(engine.tokenize(text)) + 2 + sum(max_line_tokens(s) + 2 for s in form.lines)
    n_ctx = min(poem, engine.n_ctx_train) + k * line
    own = stats if stats is not None else []
    with engine.lock:  # one generation at a time on these contexts
        fitted = cpu_share.free_threads()
        engine.n_threads = fitted.n
        models: list[LlamaLines] = []
        try:
            for c, a in enumerate(layout):
                models.append(LlamaLines(engine, engine._context(c, a, n_ctx, k), k))
            form_stats = [forms.FormStats() for _ in layout]
            writers = [forms.write(lm, text, form, sampling, candidates=candidates, prefilled=prefilled,
                                   cancel=cancel, stats=form_stats[c]) for c, lm in enumerate(models)]
            yield from forms.interleave(writers, form_stats, own, cancel, threads=fitted)
        finally:
            for lm in models:
                lm.close()

