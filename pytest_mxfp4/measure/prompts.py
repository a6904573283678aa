"""Prompts of exactly N tokens, calibrated against the server's own tokenizer.

Each prompt starts with a fresh nonce so no two runs share a prefix (the
prefix cache hashes whole blocks from the start: a different first block
means no hit). Length is found by binary search over a word sequence, then
topped up one token at a time with fillers checked by the server.
"""

from __future__ import annotations

import random
import secrets
from typing import Callable

from ..errors import MeasurementError

# Plain English words: realistic-ish text for a BPE tokenizer, no corpus file needed.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out other time "
    "into only some could them see these than then two may first any like now my such make over our even "
    "most after also made many well way down should because long where much through great before must back "
    "years work day might good new just little very still world know life between last never under while "
    "system engine model token memory kernel cache prefill decode latency throughput batch request stream "
    "measure baseline verdict noise signal river mountain garden window history science music language number "
    "question answer morning evening winter summer letter market village station journey harbor lantern"
).split()

FILLERS = (" a", " the", " and", " of", ".", ",", " x")


def nonce() -> str:
    return secrets.token_hex(4)


class PromptFactory:
    """Builds prompts of an exact token count using `count_tokens(text) -> int`."""

    def __init__(self, count_tokens: Callable[[str], int], seed: int | None = None):
        self.count = count_tokens
        self.rng = random.Random(seed)

    def _words(self, n: int) -> list[str]:
        return [self.rng.choice(_WORDS) for _ in range(n)]

    def exact(self, n_tokens: int, prefix: str | None = None) -> str:
        """A text that the server counts as exactly `n_tokens` tokens
        (including BOS / chat template). `prefix` (e.g. a depth context) is kept as is."""
        head = prefix if prefix is not None else f"[{nonce()}]"
        base = self.count(head)
        if base > n_tokens:
            raise MeasurementError(f"cannot build a {n_tokens}-token prompt: its fixed part alone is {base} tokens")
        words = self._words(max(8, 2 * (n_tokens - base) + 8))

        def text(k: int) -> str:
            return head + ("" if k == 0 else " " + " ".join(words[:k]))

        while self.count(text(len(words))) < n_tokens:  # rare: very compressing tokenizer
            words += self._words(len(words))
        lo, hi = 0, len(words)  # invariant: count(text(lo)) <= n < count(text(hi))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.count(text(mid)) <= n_tokens:
                lo = mid
            else:
                hi = mid
        prompt = text(lo)
        got = self.count(prompt)
        for _ in range(4 * max(1, n_tokens - got) + 8):
            if got == n_tokens:
                return prompt
            for filler in FILLERS:
                c = self.count(prompt + filler)
                if c == got + 1:
                    prompt, got = prompt + filler, c
                    break
            else:
                break
        if got != n_tokens:
            raise MeasurementError(f"could not calibrate a prompt to exactly {n_tokens} tokens (closest: {got})")
        return prompt
