"""What a run log record says (report/history): one record per (session,
server config) that measured something, with the observed facts and the
verdicts worth a glance in a few words. The file itself is
formats/runlog.py's."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from pytest_mxfp4.formats import runlog
from pytest_mxfp4.formats.runlog import RUN_LOG_LIMIT, RunLogRecord
from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.results import MetricResult, SessionResults
from pytest_mxfp4.stats.samples import Verdict

HEADLINE_KEY = "tg32/tg_tps"  # the number the run log shows per run

# Observed facts that name "what really ran" on the page, in this order
# (judge.BACKEND_FACTS is the longer list that makes a baseline incomparable).
HEADLINE_FACTS = ("attention_backend", "moe_backend", "fp4_mode", "spec_decode")
QUIET_VERDICTS = frozenset({Verdict.PASS, Verdict.NO_BASELINE})


def observed_summary(observed: ObservedFacts | None) -> str:
    """'TRITON_ATTN, MARLIN, weight_only_marlin' from observed facts ('' if none)."""
    if observed is None:
        return ""
    parts = []
    for fact in HEADLINE_FACTS:
        v = getattr(observed, fact)
        if v not in (None, "", [], {}) and not (fact == "spec_decode" and v == "none"):
            parts.append(str(v))
    return ", ".join(parts)


def verdict_summary(results: Iterable[MetricResult]) -> str:
    """The verdicts worth a glance: every fail-gated metric, and any metric
    that did not simply pass. E.g. 'tg32 pass (+0.21%); pp512 inconclusive (-3.4%)'."""
    parts = []
    for r in results:
        if r.gate != "fail" and r.verdict in QUIET_VERDICTS:
            continue
        delta = r.comparison.delta_pct if r.comparison else None
        parts.append(f"{r.short_key} {r.verdict.value}" + (f" ({delta:+.2f}%)" if delta is not None else ""))
    return "; ".join(parts)


def _compact_date(iso: str) -> str:
    digits = re.sub(r"[^0-9T]", "", iso.split("+")[0].split(".")[0])
    return (digits + "Z") if digits else "undated"


def run_id(date: str, config: str, session_id: object = None) -> str:
    """'20260109T162501Z-tiny-3f9a0c2b1d4e': the date is for people, the
    session's random id makes it unique (two runs in one second are two
    records); result files older than the id keep the date-only form."""
    return f"{_compact_date(date)}-{config}" + (f"-{session_id}" if session_id else "")


def run_log_records(session: SessionResults) -> list[RunLogRecord]:
    """One record per server config of `session` that measured something."""
    by_server = session.by_server()
    out = []
    for name in dict.fromkeys([*session.servers, *by_server]):
        results = by_server.get(name, [])
        measured = [r for r in results if r.summary is not None]
        if not measured:
            continue
        head = next((r for r in measured if r.key == HEADLINE_KEY), None)
        record = session.servers.get(name)
        # a merged session (report regeneration) keeps each config's own environment
        env = (record.environment if record else None) or session.environment
        date = env.captured_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        notes = [s for s in (observed_summary(record.observed if record else None), verdict_summary(results)) if s]
        out.append(RunLogRecord(
            run_id=run_id(date, name, env.run_id), date=date, matrix=session.matrix, config=name,
            hardware_key=env.hardware_key, git_sha=env.git_sha, tg32=head.summary.mean if head else None,
            metrics={r.key: r.summary.mean for r in measured if r.metric == r.case.primary_metric},
            verdicts={r.key: r.verdict.value for r in results if r.verdict not in QUIET_VERDICTS},
            notes="; ".join(notes)))
    return out


def append_run_log(baselines_dir: str | Path, session: SessionResults, limit: int = RUN_LOG_LIMIT) -> Path | None:
    """This session's records appended to the run log (formats/runlog.py);
    None when the session measured nothing."""
    return runlog.append_records(baselines_dir, run_log_records(session), limit)
