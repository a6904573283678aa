"""The run log: one small record per (session, server config), appended to a
bounded `run_log.jsonl` in the baselines directory whenever baselines are
updated, so the results page can list every run that moved a baseline.

A record (JSON, one per line)::

    {"schema": 1, "run_id": "20260109T162501Z-upstream-baseline-3f9a0c2b1d4e", "date": "2026-01-09T16:25:01+00:00",
     "matrix": "gb10-gpt-oss-120b", "config": "upstream-baseline", "hardware_key": "nvidia-gb10-sm121",
     "git_sha": "71d3c5f0a1b2", "tg32": 31.58, "metrics": {"tg32/tg_tps": 31.58, "pp2048/pp_tps": 4340.7},
     "verdicts": {"pp512/pp_tps": "inconclusive"}, "notes": "TRITON_ATTN, MARLIN; pp512 inconclusive"}

`metrics` holds the mean of each case's primary metric; `verdicts` only the
metrics whose verdict is not pass / no-baseline. What a record says is
decided by the report layer (report/history.py); this module owns the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.fileio import write_atomic

RUN_LOG_NAME = "run_log.jsonl"
RUN_LOG_LIMIT = 500  # records kept; the oldest are dropped first
RECORD_SCHEMA = 1


@dataclass
class RunLogRecord:
    date: str
    config: str
    run_id: str | None = None  # older logs may lack it
    matrix: str = ""
    hardware_key: str | None = None
    git_sha: str | None = None
    tg32: float | None = None  # the headline number of the run
    metrics: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    schema: int = RECORD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "run_id": self.run_id, "date": self.date, "matrix": self.matrix,
                "config": self.config, "hardware_key": self.hardware_key, "git_sha": self.git_sha,
                "tg32": self.tg32, "metrics": dict(self.metrics), "verdicts": dict(self.verdicts),
                "notes": self.notes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunLogRecord:
        """Lenient beyond 'date' and 'config' (the caller checked those): a
        field of the wrong type reads as absent, never as a guess."""
        def text(k: str) -> str | None:
            v = d.get(k)
            return None if v is None or isinstance(v, (dict, list)) else str(v)

        tg32 = d.get("tg32")
        metrics, verdicts = d.get("metrics"), d.get("verdicts")
        return cls(date=str(d["date"]), config=str(d["config"]), run_id=text("run_id"), matrix=text("matrix") or "",
                   hardware_key=text("hardware_key"), git_sha=text("git_sha"),
                   tg32=float(tg32) if isinstance(tg32, (int, float)) and not isinstance(tg32, bool) else None,
                   metrics=dict(metrics) if isinstance(metrics, dict) else {},
                   verdicts=dict(verdicts) if isinstance(verdicts, dict) else {},
                   notes=text("notes") or "", schema=d.get("schema") if isinstance(d.get("schema"), int) else 0)


def run_log_path(baselines_dir: str | Path) -> Path:
    return Path(baselines_dir) / RUN_LOG_NAME


def append_records(baselines_dir: str | Path, records: list[RunLogRecord], limit: int = RUN_LOG_LIMIT) -> Path | None:
    """Append `records` to `<baselines_dir>/run_log.jsonl`, keeping the newest
    `limit`. Written atomically; a record whose run_id is already in the log
    is not added twice. Returns the path, or None when there is nothing to add."""
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
    lines += [json.dumps(r.to_dict(), sort_keys=False) for r in records if r.run_id not in seen]
    write_atomic(path, "\n".join(lines[-limit:]) + "\n")
    return path


def read_run_log(baselines_dir: str | Path) -> list[RunLogRecord]:
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
        out.append(RunLogRecord.from_dict(rec))
    return out
