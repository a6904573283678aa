"""Prompts of exactly N tokens, calibrated against the server's own tokenizer.

Each prompt starts with a fresh nonce so no two runs share a prefix (the
prefix cache hashes whole blocks from the start: a different first block
means no hit). Length is found by binary search over a word sequence, then
topped up one token at a time with fillers checked by the server.

Bounded: at most MAX_CALLS /tokenize calls and a text of at most
MAX_WORDS_PER_TOKEN words per wanted token. A /tokenize that answers empty,
or that does not grow with the text (llama-server's answers for an unknown
field, a proxy that ignores the body), fails at once with a ServerError that
names the cause, instead of growing the prompt until memory runs out.
"""

from __future__ import annotations

import random
import secrets
from typing import Callable

from pytest_mxfp4.errors import MeasurementError, ServerError

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

MAX_CALLS = 120  # binary search over ~2n words needs log2(2n)+~10; 1M tokens is ~21
MAX_WORDS_PER_TOKEN = 8  # no tokenizer needs more than 8 words per token
MAX_PROMPT_TOKENS = 4 * 1024 * 1024  # beyond any context length: surely a typo in pp/depth


def context_length(models_json: object, model: str | None = None) -> int | None:
    """The server's context length from its /v1/models answer where it says
    (vLLM: data[].max_model_len; llama-server: data[].meta.n_ctx or the
    model's n_ctx_train), or from llama-server's /props (per-slot n_ctx);
    else None."""
    if isinstance(models_json, dict) and isinstance(models_json.get("default_generation_settings"), dict):
        # llama-server's /props: the context of one slot (-c divided by --parallel)
        n = models_json["default_generation_settings"].get("n_ctx")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    data = models_json.get("data") if isinstance(models_json, dict) else None
    if not isinstance(data, list):
        return None
    for entry in data:
        if not isinstance(entry, dict) or (model and entry.get("id") not in (model, None) and len(data) > 1):
            continue
        for value in (entry.get("max_model_len"), (entry.get("meta") or {}).get("n_ctx"),
                      (entry.get("meta") or {}).get("n_ctx_train")):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def check_fits(server: str, cases, ctx_len: int | None) -> None:
    """Every case's depth + pp + tg must fit the server's context."""
    if not ctx_len:
        return
    for c in cases:
        need = c.depth + c.pp + c.tg
        if need > ctx_len:
            raise ServerError(f"server {server!r}: case {c.id} needs {need} tokens (depth {c.depth} + pp {c.pp} + "
                              f"tg {c.tg}) but the server's context length is {ctx_len}; fix workloads in the "
                              "matrix (a typo in pp/depth?) or raise --max-model-len")


def nonce() -> str:
    return secrets.token_hex(4)


class PromptFactory:
    """Builds prompts of an exact token count using `count_tokens(text) -> int`."""

    def __init__(self, count_tokens: Callable[[str], int], seed: int | None = None, server: str = "server",
                 max_calls: int = MAX_CALLS):
        self._count_fn = count_tokens
        self.rng = random.Random(seed)
        self.server = server
        self.max_calls = max_calls
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        if self.calls > self.max_calls:
            raise ServerError(f"{self.server}: prompt calibration gave up after {self.max_calls} /tokenize calls "
                              "(its counts do not converge; is /tokenize counting this text?)")
        n = self._count_fn(text)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ServerError(f"{self.server}: /tokenize answered {n!r}, not a token count")
        return n

    def _words(self, n: int) -> list[str]:
        return [self.rng.choice(_WORDS) for _ in range(n)]

    def exact(self, n_tokens: int, prefix: str | None = None) -> str:
        """A text that the server counts as exactly `n_tokens` tokens
        (including BOS / chat template). `prefix` (e.g. a depth context) is kept as is."""
        if n_tokens > MAX_PROMPT_TOKENS:
            raise ServerError(f"{self.server}: a {n_tokens}-token prompt is beyond any context length; "
                              "check pp/depth in the matrix (extra zeros?)")
        self.calls = 0
        head = prefix if prefix is not None else f"[{nonce()}]"
        base = self.count(head)
        if base == 0:
            raise ServerError(f"{self.server}: /tokenize answered an empty token list for a non-empty text; "
                              "exact prompt lengths need a working /tokenize (does it accept `prompt`?)")
        if base > n_tokens:
            raise MeasurementError(f"cannot build a {n_tokens}-token prompt: its fixed part alone is {base} tokens")
        words = self._words(max(8, 2 * (n_tokens - base) + 8))
        max_words = MAX_WORDS_PER_TOKEN * n_tokens + 64

        def text(k: int) -> str:
            return head + ("" if k == 0 else " " + " ".join(words[:k]))

        while (total := self.count(text(len(words)))) < n_tokens:  # rare: very compressing tokenizer
            if total <= base:
                raise ServerError(f"{self.server}: /tokenize does not grow with the text ({base} tokens for the "
                                  f"prefix alone and {total} with {len(words)} words appended); it is not "
                                  "counting the prompt, so exact lengths cannot be built")
            if 2 * len(words) > max_words:
                raise ServerError(f"{self.server}: /tokenize counts {total} tokens for {len(words)} words; a "
                                  f"{n_tokens}-token prompt would need over {MAX_WORDS_PER_TOKEN} words per token. "
                                  "Is /tokenize counting this text?")
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
