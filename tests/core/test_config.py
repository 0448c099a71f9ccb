import pytest

from poetwb.core.config import SamplingConfig
from poetwb.core.errors import PoetError


def test_defaults_are_the_reports():
    s = SamplingConfig()
    assert (s.temperature, s.top_p, s.repetition_penalty) == (0.7, 0.95, 1.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top-p must be in"),
        ({"top_p": 1.5}, "top-p must be in"),
        ({"top_k": -1}, "top-k must be >= 0"),
        ({"max_new_tokens": 0}, "max new tokens"),
        ({"repetition_penalty": 0}, "repetition penalty"),
    ],
)
def test_bad_sampling_values_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(PoetError, match=message):
        SamplingConfig(**kwargs)
