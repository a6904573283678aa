"""The run log: one small record per (session, server config), appended to a
bounded `run_log.jsonl` in the baselines directory whenever baselines are
updated, so the results page can list every run that moved a baseline.

A record (JSON, one per line)::

    {"schema": 1, "run_id": "20260109T162501Z-upstream-baseline-3f9a0c2b1d4e", "date": "2026-01-09T16:25:01+00:00",
     "matrix": "gb10-gpt-oss-120b", "config": "upstream-baseline", "hardware_key": "nvidia-gb10-sm121",
     "git_sha": "71d3c5f0a1b2", "tg32": 31.58, "metrics": {"tg32/tg_tps": 31.58, "pp2048/pp_tps": 4340.7},
     "verdicts": {"pp512/pp_tps": "inconclusive"}, "notes": "TRITON_ATTN, MARLIN; pp512 inconclusive"}

`metrics` holds the mean of each case's primary metric; `verdicts` only the
metrics whose verdict is not pass / no-baseline.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pytest_mxfp4.formats.fileio import write_atomic
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.results import MetricResult, SessionResults
from pytest_mxfp4.stats.samples import Verdict

RUN_LOG_NAME = "run_log.jsonl"
RUN_LOG_LIMIT = 500  # records kept; the oldest are dropped first
RECORD_SCHEMA = 1
HEADLINE_KEY = "tg32/tg_tps"  # the number the run log shows per run

# Observed facts that name "what really ran" on the page, in this order
# (judge.BACKEND_FACTS is the longer list that makes a baseline incomparable).
HEADLINE_FACTS = ("attention_backend", "moe_backend", "fp4_mode", "spec_decode")
QUIET_VERDICTS = frozenset({Verdict.PASS, Verdict.NO_BASELINE})


def observed_summary(observed: dict[str, Any] | None) -> str:
    """'TRITON_ATTN, MARLIN, weight_only_marlin' from observed facts ('' if none)."""
    if not observed:
        return ""
    parts = []
    for fact in HEADLINE_FACTS:
        v = observed.get(fact)
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


def run_log_records(session: SessionResults) -> list[dict[str, Any]]:
    """One record per server config of `session` that measured something."""
    names = list(session.servers) + [r.server for r in session.results if r.server not in session.servers]
    out = []
    for name in dict.fromkeys(names):
        results = session.for_server(name)
        measured = [r for r in results if r.summary is not None]
        if not measured:
            continue
        head = next((r for r in measured if r.key == HEADLINE_KEY), None)
        record = session.servers.get(name)
        # a merged session (report regeneration) keeps each config's own environment
        env = (record.environment if record else None) or session.environment
        date = env.captured_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        notes = [s for s in (observed_summary(record.observed if record else None), verdict_summary(results)) if s]
        out.append({
            "schema": RECORD_SCHEMA,
            "run_id": run_id(date, name, env.run_id),
            "date": date,
            "matrix": session.matrix,
            "config": name,
            "hardware_key": env.hardware_key,
            "git_sha": env.git_sha,
            "tg32": head.summary.mean if head else None,
            "metrics": {r.key: r.summary.mean for r in measured if r.metric == r.case.primary_metric},
            "verdicts": {r.key: r.verdict.value for r in results if r.verdict not in QUIET_VERDICTS},
            "notes": "; ".join(notes),
        })
    return out


def run_log_path(baselines_dir: str | Path) -> Path:
    return Path(baselines_dir) / RUN_LOG_NAME


def append_run_log(baselines_dir: str | Path, session: SessionResults, limit: int = RUN_LOG_LIMIT) -> Path | None:
    """Append this session's records to `<baselines_dir>/run_log.jsonl`,
    keeping the newest `limit` records. Written atomically; a record whose
    run_id is already in the log is not added twice. Returns the path, or
    None when the session measured nothing."""
    records = run_log_records(session)
    if not records:
        return None
    path = run_log_path(baselines_dir)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    except OSError as e:
        raise PerfUserError(f"{path}: cannot read the run log ({e.strerror})") from None
    seen = set()
    for ln in lines:
        try:
            seen.add(json.loads(ln).get("run_id"))
        except (ValueError, AttributeError):
            pass  # a damaged line is kept as is; read_run_log reports it
    lines += [json.dumps(r, sort_keys=False) for r in records if r["run_id"] not in seen]
    write_atomic(path, "\n".join(lines[-limit:]) + "\n")
    return path


def read_run_log(baselines_dir: str | Path) -> list[dict[str, Any]]:
    """All records of `<baselines_dir>/run_log.jsonl`, oldest first ([] when
    there is no log). A damaged line raises PerfUserError naming file and line."""
    path = run_log_path(baselines_dir)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except OSError as e:
        raise PerfUserError(f"{path}: cannot read the run log ({e.strerror})") from None
    out = []
    for i, ln in enumerate(text.splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            raise PerfUserError(f"{path}: line {i}: not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(rec, dict) or not rec.get("config") or not rec.get("date"):
            raise PerfUserError(f"{path}: line {i}: expected a run record with at least 'date' and 'config'; "
                                "fix or delete that line")
        out.append(rec)
    return out
