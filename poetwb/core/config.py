"""Settings as dataclasses with a docstring per field and validation in __post_init__, so bad values fail early
with a one-line message in every front end."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from poetwb.core.errors import PoetError


@dataclass
class SamplingConfig:
    """How to sample a poem. Defaults follow the report (temperature 0.7, top-p 0.95, repetition penalty 1.1)."""

    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding (deterministic, ignores top-p/top-k)."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p, in (0, 1]."""
    top_k: int = 50
    """Keep only the k most likely tokens; 0 turns the filter off. Capped at the vocabulary size."""
    repetition_penalty: float = 1.1
    """> 1 discourages repeating tokens already in the text; 1 turns it off."""
    max_new_tokens: int = 160
    """How many tokens to generate at most (a sonnet is ~150 tokens)."""
    seed: int = 0
    """Random seed: the same seed, prompt, model and settings give the same poem."""

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}"),
            (self.temperature <= 5, f"temperature must be <= 5, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top-k must be >= 0 (0 = off), got {self.top_k}"),
            (self.repetition_penalty > 0, f"repetition penalty must be > 0, got {self.repetition_penalty}"),
            (1 <= self.max_new_tokens <= 4096, f"max new tokens must be in 1..4096, got {self.max_new_tokens}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PoetError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
