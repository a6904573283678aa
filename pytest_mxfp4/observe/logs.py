"""A server log -> the facts it proves, by the engine's own rules
(`vllm.py`, `llamacpp.py`; both build on `facts.ObservedFacts`)."""

from __future__ import annotations

from pytest_mxfp4.observe import llamacpp, vllm
from pytest_mxfp4.formats.facts import CORE_FACTS, ObservedFacts

RULES = {"vllm": vllm, "llama.cpp": llamacpp}
ENGINES = tuple(RULES)  # engines whose logs can be read


def observe_text(text: str, engine: str = "vllm") -> ObservedFacts:
    """Extract the observed facts from a server log."""
    if engine not in RULES:
        raise ValueError(f"unknown engine {engine!r} for log observation (known: {', '.join(ENGINES)})")
    rules = RULES[engine]
    facts = ObservedFacts(_core=getattr(rules, "CORE_FACTS", CORE_FACTS))
    rules.observe(text, facts)
    return facts
