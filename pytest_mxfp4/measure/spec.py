"""Speculative decoding: how many drafted tokens the target accepted.

With speculative decoding, tg t/s depends on acceptance, and acceptance on
the drafter, the prompt text and the sampling: a tg drop with an acceptance
drop is a different bug from a tg drop at equal acceptance (kernels). So
every sample of a spec-decode server keeps the engine's own counts for its
request, read from the engine's counters before and after it:

- vLLM `/metrics`: `vllm:spec_decode_num_drafts_total` (verification steps),
  `vllm:spec_decode_num_draft_tokens_total`, `vllm:spec_decode_num_accepted_tokens_total`
- llama.cpp `/metrics` (with `--metrics`): `llamacpp:spec_decode_num_drafts_total`,
  `..._num_draft_tokens_total`, `..._num_accepted_tokens_total`; and, per
  request, `draft_n` / `draft_n_accepted` in the response's `timings`
  (used where /metrics is off; no step count there, so no acceptance length).

Two numbers per sample, as vLLM's own SpecDecoding log line defines them:
- acceptance rate (%) = accepted / drafted tokens
- mean acceptance length (tokens per target step) = 1 + accepted / drafts

Pure functions on plain values; the client reads the text, the runner keeps
the counts per sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COUNTER = re.compile(r"^(?P<name>(?:vllm|llamacpp):spec_decode_num_(?:drafts|draft_tokens|accepted_tokens))"
                      r"(?:_total)?(?:\{[^}]*\})?\s+(?P<v>[0-9.eE+-]+)\s*$", re.M)


@dataclass(frozen=True)
class SpecCounts:
    """Drafting counts of one request (or a counter reading). `drafts` is the
    number of verification steps; None where the source does not count them."""

    drafted: float
    accepted: float
    drafts: float | None = None
    source: str = "metrics"  # "metrics" (/metrics counters) | "timings" (llama.cpp per-request timings)

    def minus(self, before: "SpecCounts") -> "SpecCounts":
        return SpecCounts(self.drafted - before.drafted, self.accepted - before.accepted,
                          None if self.drafts is None or before.drafts is None else self.drafts - before.drafts,
                          self.source)

    @property
    def rate_pct(self) -> float | None:
        """Accepted / drafted tokens, in percent (None: nothing drafted)."""
        return 100.0 * self.accepted / self.drafted if self.drafted > 0 else None

    @property
    def mean_length(self) -> float | None:
        """Tokens per target step: 1 + accepted / drafts (None without a step count)."""
        return 1.0 + self.accepted / self.drafts if self.drafts else None

    def to_dict(self) -> dict:
        return {"drafted": int(self.drafted), "accepted": int(self.accepted),
                "drafts": None if self.drafts is None else int(self.drafts), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "SpecCounts":
        return cls(float(d["drafted"]), float(d["accepted"]),
                   None if d.get("drafts") is None else float(d["drafts"]), str(d.get("source") or "metrics"))


def parse_counters(metrics_text: str) -> SpecCounts | None:
    """The spec-decode counters of a vLLM or llama.cpp /metrics page, summed
    over labels (vLLM labels them by engine); None where the page has none
    (no speculative decoding configured, or an engine that does not count)."""
    sums: dict[str, float] = {}
    for m in _COUNTER.finditer(metrics_text):
        kind = m["name"].rsplit("spec_decode_num_", 1)[1]
        sums[kind] = sums.get(kind, 0.0) + float(m["v"])
    if "draft_tokens" not in sums or "accepted_tokens" not in sums:
        return None
    return SpecCounts(sums["draft_tokens"], sums["accepted_tokens"], sums.get("drafts"))


def from_timings(timings: dict | None) -> SpecCounts | None:
    """llama.cpp's per-request counts (`timings.draft_n`, `draft_n_accepted`)."""
    if not isinstance(timings, dict):
        return None
    n, acc = timings.get("draft_n"), timings.get("draft_n_accepted")
    if not isinstance(n, (int, float)) or not isinstance(acc, (int, float)) or isinstance(n, bool):
        return None
    return SpecCounts(float(n), float(acc), None, "timings")


def request_counts(before: SpecCounts | None, after: SpecCounts | None, timings: dict | None) -> SpecCounts | None:
    """One request's counts: the counter delta where both readings exist and
    it drafted anything, else llama.cpp's per-request timings, else None (no
    speculative decoding seen for this request)."""
    if before is not None and after is not None:
        delta = after.minus(before)
        if delta.drafted > 0 or delta.drafts:
            return delta
    return from_timings(timings)
