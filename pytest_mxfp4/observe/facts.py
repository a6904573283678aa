"""Expectations against observed runtime facts: `check_expectations(expect,
facts)` compares a server config's `expect:` block with what its log proved
(`ObservedFacts`, the record, is formats/facts.py's). Names compare
case-insensitively, a list accepts any of its values, `null` expects the
fact to be absent.

Reading a log into facts is `logs.observe_text`, by the per-engine rules of
`vllm.py` and `llamacpp.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pytest_mxfp4.formats.facts import ObservedFacts

__all__ = ["Mismatch", "check_expectations"]


@dataclass(frozen=True)
class Mismatch:
    fact: str
    expected: Any
    observed: Any
    evidence_line: str | None
    message: str


# --- expectations ---------------------------------------------------------------

# `AttentionBackendEnum.FLASH_ATTN` and `FLASH_ATTN` name the same thing; an
# expectation should not depend on which repr a given version logged.
_ENUM_QUALIFIER = re.compile(r"^[A-Za-z_]\w*\.(?=[A-Za-z_])")


def _norm(value: Any) -> str:
    return _ENUM_QUALIFIER.sub("", str(value).strip()).casefold()


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _matches(expected: Any, observed: Any, is_list_fact: bool) -> bool:
    if expected is None:
        return observed is None
    if observed is None:
        return False
    if is_list_fact:
        # A list fact (env vars, candidates) matches when it has the same members.
        exp = expected if isinstance(expected, list) else [expected]
        return {_norm(v) for v in exp} == {_norm(v) for v in observed}
    # A scalar fact: `expected` may list the acceptable values.
    acceptable = expected if isinstance(expected, list) else [expected]
    return _norm(observed) in {_norm(v) for v in acceptable}


def _describe_expected(expected: Any, is_list_fact: bool) -> str:
    if isinstance(expected, list) and not is_list_fact:
        return "one of " + ", ".join(_show(v) for v in expected)
    return _show(expected)


def check_expectations(expect: dict[str, Any], facts: ObservedFacts) -> list[Mismatch]:
    """Compare `expect` (fact name -> value or list of acceptable values) with
    what the log showed. Names compare case-insensitively; `null` expects the
    fact to be absent (e.g. `fp4_mode: null`: no weight-only FP4 fallback)."""
    known = ObservedFacts.fact_names()
    mismatches: list[Mismatch] = []
    for fact, expected in expect.items():
        if fact not in known:
            mismatches.append(Mismatch(
                fact, expected, None, None,
                f"{fact}: not a fact pytest-mxfp4 can observe (known: {', '.join(sorted(known))})",
            ))
            continue
        observed = getattr(facts, fact)
        evidence = facts.evidence.get(fact)
        is_list_fact = fact in ("unknown_env_vars", "deprecated_env_vars", "tensor_types") or fact.endswith("_candidates")
        if _matches(expected, observed, is_list_fact):
            continue
        want = _describe_expected(expected, is_list_fact)
        if observed is None:
            message = (f"{fact}: expected {want}, but it could not be observed in the log "
                       "(no line shows it; check the log level and that the server got this far)")
        else:
            message = f"{fact}: expected {want}, observed {_show(observed)}"
            if evidence:
                message += f" (log: {evidence})"
        mismatches.append(Mismatch(fact, expected, observed, evidence, message))
    return mismatches
