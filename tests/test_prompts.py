"""Prompt-length calibration against a tokenizer we can reason about."""

import re

import pytest

from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.measure.prompts import PromptFactory


class ToyTokenizer:
    """BOS + one token per word, but long words split into 2-3 tokens and
    punctuation separate: word boundaries don't map 1:1 to tokens."""

    def __init__(self):
        self.calls = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        n = 1  # BOS
        for piece in re.findall(r"\w+|[^\w\s]", text):
            n += 1 + len(piece) // 6
        return n


@pytest.mark.parametrize("n", [8, 33, 512, 2048, 4097])
def test_exact_length(n):
    tok = ToyTokenizer()
    f = PromptFactory(tok, seed=n)
    prompt = f.exact(n)
    assert tok(prompt) == n
    assert tok.calls < 60, "binary search, not a linear scan"


def test_prompts_are_unique_per_run():
    f = PromptFactory(ToyTokenizer(), seed=1)
    a, b = f.exact(64), f.exact(64)
    assert a != b and a[:10] != b[:10], "different nonce prefix so the prefix cache can't hit"


def test_depth_prefix_is_kept():
    tok = ToyTokenizer()
    f = PromptFactory(tok, seed=2)
    ctx = f.exact(100)
    full = f.exact(150, prefix=ctx)
    assert full.startswith(ctx) and tok(full) == 150


def test_impossible_length_is_an_error():
    f = PromptFactory(lambda text: 10 + 2 * len(text.split()), seed=3)  # always even, >= 12
    with pytest.raises(MeasurementError, match="exactly 13 tokens"):
        f.exact(13)
    with pytest.raises(MeasurementError, match="fixed part alone"):
        f.exact(5)
