"""The results page's view model, built once: what the page says, decided
here; markdown.py only lays it out.

One entry per server config, with its numbers from this run or, where the
run did not measure it, from the stored baseline; and every judgement the
page shows (notes, status, variance notes, acceptance, best results, run
log, the A/B and shard sections), so that rendering goes down one way:
results -> view -> text."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pytest_mxfp4.formats.baselines import BaselineEnvironment, BaselineFile
from pytest_mxfp4.formats.config import HIGHER_IS_BETTER, METRIC_UNITS, METRICS, Case, Matrix, ServerConfig, Target
from pytest_mxfp4.formats.results import (MetricResult, RunEnvironment, ServerRecord, SessionResults, ShardInfo,
                                          interrupted_line)
from pytest_mxfp4.stats.samples import NoiseState, Summary, Verdict, noise_state
from pytest_mxfp4.stats.samples import cv as cv_of
from pytest_mxfp4.report.acceptance import ACCEPT_METRIC, LENGTH_METRIC, from_results, sentence
from pytest_mxfp4.report.format import day, frac_pct
from pytest_mxfp4.report.format import when as _when
from pytest_mxfp4.report.history import HEADLINE_KEY, observed_summary, run_log_records, verdict_summary
from pytest_mxfp4.report.terminal import flags_note
from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.runlog import RunLogRecord
from pytest_mxfp4.observe.facts import check_expectations

METRIC_UNIT_OF = {m.name: m.unit for m in METRICS.values()}

# Columns of the comparison matrix, as on the hand-kept page; those the data
# and matrix don't have are left out (a matrix with none of them shows its own).
MATRIX_CASES = ("tg32", "tg128", "tg256", "pp2048")
TTFT_METRIC = "e2e_ttft_ms"
DECODE_DROP_PCT = 1.0  # a longer decode this much slower than the shorter one gets a note


@dataclass
class StatView:
    mean: float
    stdev: float
    n: int
    median: float | None  # only where samples are known
    unit: str
    source: str  # "run" | "baseline"
    date: str
    history_cv: tuple[float, ...] = ()  # CVs of earlier runs of this metric
    result: MetricResult | None = None
    flagged: int = 0

    @property
    def cv(self) -> float | None:
        """None where the spread is unknown (n < 2) or undefined (mean 0)."""
        if self.n < 2 or self.mean == 0:
            return None
        return cv_of(self.mean, self.stdev)


@dataclass
class ConfigView:
    name: str
    description: str = ""
    cfg: ServerConfig | None = None
    record: ServerRecord | None = None
    baseline: BaselineFile | None = None
    stats: dict[str, StatView] = field(default_factory=dict)
    source: str | None = None  # "run" | "baseline" | None
    date: str = ""
    environment: RunEnvironment | None = None  # where this run measured it (source "run")
    pending: str | None = None
    skipped: str | None = None
    error: str | None = None
    results: list[MetricResult] = field(default_factory=list)
    # built once with the view (the page's sections only format them)
    cases: dict[str, Case] = field(default_factory=dict)  # the cases of its stats, prefill first, in order
    environment_block: dict[str, Any] = field(default_factory=dict)
    server_block: dict[str, Any] = field(default_factory=dict)
    facts: ObservedFacts | None = None  # what the log showed (or the stored baseline's)
    observed: dict[str, Any] = field(default_factory=dict)  # those of its facts that hold a value, by name
    observed_source: str = ""
    expect: dict[str, Any] = field(default_factory=dict)
    expect_ok: dict[str, bool] = field(default_factory=dict)  # fact -> does the observed value satisfy expect
    notes: str = ""  # the comparison matrix's Notes cell
    status: str = ""  # the config section's status line
    variance: list[VarianceRow] = field(default_factory=list)  # primary metrics, page order
    insight: str | None = None  # decode vs prefill noise, under the variance table
    # what the other wings say about it (gathered once, worded by the page)
    observed_words: str = ""  # the run's observed facts in brief
    baseline_words: str = ""  # the stored baseline's
    verdict_words: str = ""  # the verdicts worth a glance
    baseline_environment: dict[str, Any] = field(default_factory=dict)  # the stored baseline's, as stored
    baseline_engine: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, tuple[NoiseState, float | None]] = field(default_factory=dict)  # key -> noise state, median
    accept_sentence: dict[str, str] = field(default_factory=dict)  # decode case id -> did acceptance move with tg
    shown: bool = False  # has a section of its own


@dataclass
class VarianceRow:
    case_id: str
    stat: StatView
    notes: list[str]


@dataclass
class BestRow:
    label: str
    reference: float | None  # the stored baseline's mean
    best: float
    config: str
    date: str


@dataclass
class RunLogRow:
    run_id: str
    date: str
    config: str
    tg32: float | None
    hardware_key: str
    git_sha: str
    notes: str


@dataclass
class Page:
    """The whole results page's view, built once from the results, matrix and baselines."""

    configs: list[ConfigView]
    decode: list[Case]  # every decode case of the matrix or the stats, in order
    prefill: list[Case]
    title: str = "pytest-mxfp4"
    hardware: str = ""
    latest: str = ""  # date of the newest numbers shown
    interrupted: str | None = None  # why this run is not a complete one
    matrix: Matrix | None = None
    targets: list[Target] = field(default_factory=list)
    ttft: Case | None = None  # the prefill case whose TTFT the page shows
    columns: list[Case] = field(default_factory=list)  # of the comparison matrix
    accept_case: Case | None = None  # the decode case whose acceptance the matrix shows
    best: list[BestRow] = field(default_factory=list)
    run_log: list[RunLogRow] = field(default_factory=list)
    run_log_from_baselines: bool = False
    ab_section: str | None = None  # the A/B of the starts, as the A/B report words it
    shards: list[ShardInfo] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def build(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile],
          run_log: list[RunLogRecord] | None = None) -> Page:
    """Everything the page says, from the run's results, the matrix, the
    stored baselines (same hardware) and the run log's records."""
    configs = collect(session, matrix, baselines)
    page = Page(configs=configs, decode=cases_of(configs, matrix, "decode"),
                prefill=cases_of(configs, matrix, "prefill"), matrix=matrix)
    page.targets = _targets(session, matrix)
    page.ttft = _ttft_case(page)
    page.columns = _matrix_columns(page)
    page.accept_case = _acceptance_case(page)
    for c in configs:
        found = {case.id: case for case in (case_for(k.partition("/")[0], matrix) for k in c.stats) if case}
        c.cases = {cs.id: cs for cs in sorted(found.values(), key=lambda x: (x.kind != "prefill", case_order(x)))}
        c.facts, c.observed_source = _observed(c)
        c.expect = dict(c.cfg.expect) if c.cfg is not None else {}
        c.shown = bool(c.stats or c.error or (c.skipped and not c.pending) or (c.record is not None and c.record.info))
    page.title = (matrix.name if matrix is not None else "") or session.matrix or "pytest-mxfp4"
    page.hardware = session.hardware_key or next((b.hardware_key for b in baselines.values()), "")
    page.latest = max((c.date for c in configs if c.date), default="")
    page.best = _best_results(page)
    page.shards = sorted(session.shards, key=lambda s: (s.index or 0, s.file))
    page.incomplete = list(session.incomplete)
    records = _gather(page, session)
    page.run_log, page.run_log_from_baselines = _run_log(records, run_log, page, baselines)
    for c in configs:
        c.environment_block = environment_block(c)
        c.server_block = server_config_block(c)
        c.notes, c.status = _config_notes(c), _status(c)
        c.variance = [VarianceRow(k.partition("/")[0], c.stats[k], _variance_notes(c, k, c.stats[k]))
                      for k in (primary_key(cs) for cs in c.cases.values()) if k in c.stats]
        c.insight = _insight(c)
    return page


def _gather(page: Page, session: SessionResults) -> list[RunLogRecord]:
    """What the other wings say about the configs, asked in one pass before
    the page words anything: the expectations rule (observe), the observed
    and verdict summaries and run log records (history), the noise state
    (stats), the interrupted line (results), the A/B section (abreport) and
    the acceptance sentences. Returns this session's run log records."""
    known = set(ObservedFacts.fact_names())
    for c in page.configs:
        c.observed_words = observed_summary(c.record.observed if c.record else None)
        c.baseline_words = observed_summary(c.baseline.environment.observed) if c.baseline is not None else ""
        c.verdict_words = verdict_summary(c.results)
        if c.baseline is not None:  # the stored keys as they are, unknown ones too
            c.baseline_environment, c.baseline_engine = c.baseline.environment.run_dict(), c.baseline.engine.to_dict()
        c.observed = c.facts.shown() if c.facts is not None else {}
        c.expect_ok = _expect_status(c.expect, c.facts, known) if (c.observed or c.expect) else {}
        for key, st in c.stats.items():
            metric = key.partition("/")[2]
            peers = [p.cv for k, p in c.stats.items() if k != key and k.partition("/")[2] == metric and p.cv is not None]
            if st.cv is not None:
                c.noise[key] = noise_state(st.cv, st.history_cv, peers)
    records = run_log_records(session)
    page.interrupted = interrupted_line(session) if session.interrupted else None
    if session.starts is not None:
        from pytest_mxfp4.report.abreport import page_section

        page.ab_section = page_section(session.starts)
    for c in page.configs:  # all results: an A/B head arm's acceptance is against its base arm
        for case in c.cases.values():
            tg = c.stats.get(primary_key(case))
            spec = any(f"{case.id}/{m}" in c.stats for m in (ACCEPT_METRIC, LENGTH_METRIC))
            if case.kind == "decode" and spec and tg is not None and tg.result is not None and c.results:
                words = sentence(tg.result.verdict.value,
                                 from_results(session.results or c.results, tg.result.server, case.id))
                if words:
                    c.accept_sentence[case.id] = words
    return records


def _expect_status(expect: dict[str, Any], facts: ObservedFacts | None, known: set[str]) -> dict[str, bool]:
    """fact -> does the observed value satisfy `expect:`? The plugin's own
    rule (observe.check_expectations: lists = any of, null = absent); a
    value it cannot compare (a hand-edited file) is compared as it is."""
    facts = facts or ObservedFacts(_core=())
    try:
        bad = {m.fact for m in check_expectations({k: v for k, v in expect.items() if k in known}, facts)}
    except (TypeError, ValueError):
        return {k: k in known and expect[k] == getattr(facts, k) for k in expect}
    return {k: k in known and k not in bad for k in expect}


def _observed(c: ConfigView) -> tuple[ObservedFacts | None, str]:
    """What the server log showed: this run's, else the stored baseline's."""
    if c.record is not None and c.record.observed is not None:
        return c.record.observed, "from the server log"
    if c.baseline is not None and c.baseline.environment.observed is not None:
        return c.baseline.environment.observed, "from the stored baseline"
    return None, "from the server log"


def history_cvs(bf: BaselineFile, key: str, exclude_latest: bool) -> tuple[float, ...]:
    m = bf.metrics.get(key)
    if m is None:
        return ()
    hist = list(m.history)
    if exclude_latest and hist and hist[-1].date == bf.updated:
        hist = hist[:-1]  # that entry is the baseline itself
    return tuple(h.cv for h in hist if h.n > 1)


def collect(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile]) -> list[ConfigView]:
    names: list[str] = []
    if matrix is not None:
        names += [s.name for s in matrix.servers]
    names += list(session.servers) + [r.server for r in session.results] + list(baselines)
    by_server = session.by_server()
    configs = []
    for name in dict.fromkeys(names):
        c = ConfigView(name=name)
        c.cfg = server_config(matrix, name)
        c.record = session.servers.get(name)
        c.baseline = baselines.get(name)
        c.description = (c.cfg.description if c.cfg else "") or (c.record.description if c.record else "")
        if c.cfg is not None and c.cfg.pending:
            c.pending = c.cfg.pending
        if c.record is not None:
            if c.record.skipped and c.record.skipped.startswith("pending: "):
                c.pending = c.pending or c.record.skipped[len("pending: "):]
            elif c.record.skipped:
                c.skipped = c.record.skipped
            c.error = c.record.error
        c.results = by_server.get(name, [])
        measured = [r for r in c.results if r.summary is not None]
        if measured:
            env = (c.record.environment if c.record else None) or session.environment
            c.source, c.environment, c.date = "run", env, env.captured_at or ""
            for r in measured:
                s = r.summary
                hist = r.baseline.history_cv if r.baseline is not None else ()
                if not hist and c.baseline is not None:
                    hist = history_cvs(c.baseline, r.key, exclude_latest=False)
                c.stats[r.key] = StatView(s.mean, s.stdev, s.n, s.median if s.n else None, r.unit, "run", c.date,
                                       tuple(hist), r, r.flagged_samples)
        elif c.baseline is not None and c.baseline.metrics:
            bf = c.baseline
            c.source, c.date = "baseline", bf.updated
            for key, m in bf.metrics.items():
                median = Summary.from_samples(m.samples).median if m.samples else None
                unit = m.unit or METRIC_UNIT_OF.get(key.partition("/")[2], "")
                c.stats[key] = StatView(m.mean, m.stdev, m.n, median, unit, "baseline", bf.updated,
                                     history_cvs(bf, key, exclude_latest=True))
        configs.append(c)
    return configs


def server_config(matrix: Matrix | None, name: str) -> ServerConfig | None:
    if matrix is None:
        return None
    try:
        return matrix.server(name)
    except KeyError:
        return None


# --------------------------------------------------------------------------
# Keys and cases


def primary_key(case: Case) -> str:
    return f"{case.id}/{case.primary_metric}"


def case_for(case_id: str, matrix: Matrix | None) -> Case | None:
    """'tg32' / 'pp2048@d4096' -> Case (pp of a decode case from the matrix, when known)."""
    if matrix is not None:
        for c in matrix.workloads.cases:
            if c.id == case_id:
                return c
    try:
        return Case.parse(case_id)
    except ValueError:
        return None


def case_order(case: Case) -> tuple:
    return (case.depth, case.pp if case.kind == "prefill" else case.tg, case.concurrency)


def cases_of(configs: list[ConfigView], matrix: Matrix | None, kind: str) -> list[Case]:
    ids: list[str] = []
    if matrix is not None:
        ids += [c.id for c in matrix.workloads.cases]
    for c in configs:
        ids += [k.partition("/")[0] for k in c.stats]
    cases = [case_for(i, matrix) for i in dict.fromkeys(ids)]
    return sorted((c for c in cases if c is not None and c.kind == kind), key=case_order)


def environment_block(c: ConfigView) -> dict[str, Any]:
    """The config's environment block: this run's where it measured, else the baseline's."""
    out: dict[str, Any] = {}
    if c.source == "run" and c.environment is not None:
        env = c.environment
        out["date"] = _when(env.captured_at or "")
        for k in ("hardware_key", "git_sha", "plugin_version"):
            if getattr(env, k) is not None:
                out[k] = getattr(env, k)
        if env.gpus:
            names = [f"{g.name} (SM {g.sm}" + (f", driver {g.driver}" if g.driver else "")
                     + (f", {g.memory_mib} MiB" if g.memory_mib else "") + ")" for g in env.gpus]
            out["gpu"] = names[0] if len(names) == 1 else names
        if env.cpu_model:
            out["cpu"] = f"{env.cpu_model} ({env.cpu_count if env.cpu_count is not None else '?'} cores)"
        for k in ("memory_gib", "os", "python", "telemetry"):
            if getattr(env, k) not in (None, ""):
                out[k] = getattr(env, k)
        details = c.record.info.details if c.record and c.record.info else {}
        for k in ("image", "image_id", "engine_version"):
            if details.get(k):
                out[k] = details[k]
    elif c.baseline is not None:
        bf = c.baseline
        out["date"] = _when(bf.updated)
        out["hardware_key"] = bf.hardware_key
        if bf.source:
            out["source"] = bf.source
        for k, v in c.baseline_environment.items():
            if k not in ("observed", "server_command", "server_env", "hostname"):
                out[k] = v
        for k, v in c.baseline_engine.items():
            out.setdefault(k, v)
    return out


def server_config_block(c: ConfigView) -> dict[str, Any]:
    """How the server was started: from the run, else the baseline, else the matrix."""
    out: dict[str, Any] = {}
    cfg, info = c.cfg, c.record.info if c.record else None
    bf_env = c.baseline.environment if c.baseline is not None else BaselineEnvironment()
    if cfg is not None:
        out["runner"] = cfg.runner
        if cfg.docker is not None:
            out["image"] = cfg.docker.image
        out["model"] = cfg.model
        if cfg.served_model_name:
            out["served_model"] = cfg.served_model_name
        out["api"] = cfg.api
    elif c.record is not None and c.record.runner:
        out["runner"] = c.record.runner
        out["model"] = c.record.model
    elif c.baseline is not None:
        out["model"] = c.baseline.model
        if c.baseline.engine.runner:
            out["runner"] = c.baseline.engine.runner
    command = (info.command if info else None) or bf_env.server_command
    if not command and cfg is not None:
        command = [*cfg.command, *cfg.args]
    if command:
        out["command"] = " ".join(str(x) for x in command)
    env = (info.env if info else None) or bf_env.server_env or (dict(cfg.env) if cfg is not None else {})
    if env:
        out["env_vars"] = dict(env)
    return out


# --------------------------------------------------------------------------
# What the page says


def _targets(session: SessionResults, matrix: Matrix | None) -> list[Target]:
    """The matrix's targets, else those the results carry (a page rebuilt from JSON)."""
    if matrix is not None and matrix.targets:
        return list(matrix.targets)
    seen: dict[tuple, Target] = {}
    for r in session.results:
        for t in r.targets:
            seen.setdefault((t.engine, t.metric, t.value), t)
    return list(seen.values())


def _ttft_case(page: Page) -> Case | None:
    """The prefill case whose TTFT the page shows: pp2048 where present, else
    the longest prompt with a TTFT number."""
    have = {k for c in page.configs for k in c.stats} | {t.metric for t in page.targets}
    with_ttft = [c for c in page.prefill if f"{c.id}/{TTFT_METRIC}" in have]
    for c in with_ttft:
        if c.id == "pp2048":
            return c
    return with_ttft[-1] if with_ttft else None


def _matrix_columns(page: Page) -> list[Case]:
    pool = page.decode + page.prefill
    have = {k.partition("/")[0] for c in page.configs for k in c.stats} | {
        t.metric.partition("/")[0] for t in page.targets}
    if page.matrix is not None:
        have |= {c.id for c in page.matrix.workloads.cases}
    chosen = [c for cid in MATRIX_CASES for c in pool if c.id == cid and cid in have]
    for kind in ("decode", "prefill"):  # a matrix without the page's usual cases shows its own (two per kind)
        if not any(c.kind == kind for c in chosen):
            chosen += [c for c in pool if c.kind == kind and c.id in have][:2]
    return chosen


def _acceptance_case(page: Page) -> Case | None:
    """The decode case whose acceptance the matrix shows (the first column that has it)."""
    for case in page.columns:
        if case.kind == "decode" and any(f"{case.id}/{ACCEPT_METRIC}" in c.stats for c in page.configs):
            return case
    return None


def _reason(text: str) -> str:
    """The first clause of a pending/skip reason, capitalised, for a table cell."""
    short = text
    for sep in (" (", "; ", ": needs", "\n"):
        if sep in short:
            short = short.split(sep, 1)[0]
    short = short.strip().rstrip(".")
    return short[:1].upper() + short[1:]


def _config_notes(c: ConfigView) -> str:
    if c.pending:
        return _reason(c.pending)
    parts = []
    if c.error:
        parts.append(f"Error: {c.error.splitlines()[0]}")
    if c.skipped:
        parts.append(f"Skipped: {_reason(c.skipped)}")
    obs = c.observed_words or c.baseline_words
    if obs:
        parts.append(obs)
    if c.source == "run":
        v = c.verdict_words
        if v:
            parts.append(v)
        errs = [r.short_key for r in c.results if r.error]
        if errs and not v:
            parts.append("error: " + ", ".join(errs))
    elif c.source == "baseline":
        v = c.verdict_words  # this run measured nothing usable: say why
        if v:
            parts.append(v)
        parts.append(f"stored baseline {day(c.date)}")
    return "; ".join(parts) or "Not measured yet"


def _status(c: ConfigView) -> str:
    if c.error:
        return f"❌ ERROR - {c.error.splitlines()[0]}"
    if c.source == "run":
        bad = [r for r in c.results if r.verdict in (Verdict.REGRESSED, Verdict.ERROR)]
        fails = [r for r in bad if r.fails]
        if fails:
            return f"❌ REGRESSED - {_when(c.date)} ({', '.join(r.short_key for r in fails)})"
        tail = f" ({len(bad)} warning(s): {', '.join(r.short_key for r in bad)})" if bad else ""
        return f"✅ COMPLETE - {_when(c.date)}{tail}"
    base = f"; numbers from the stored baseline of {day(c.date)}" if c.source == "baseline" else ""
    failed = [r.short_key for r in c.results if r.error]
    if failed:
        return f"💥 NOT MEASURED this run - {len(failed)} metric(s) errored ({', '.join(failed)}){base}"
    if c.skipped:
        return f"⏭ SKIPPED this run - {c.skipped}{base}"
    if c.source == "baseline":
        return f"✅ BASELINE - {_when(c.date)}" + (f" ({c.baseline.source})" if c.baseline and c.baseline.source else "")
    return "NOT RUN"


def _variance_notes(c: ConfigView, key: str, s: StatView) -> list[str]:
    cases = c.cases  # in page order
    notes = []
    cv = s.cv
    case_id, _, metric = key.partition("/")
    if cv is None:
        return [f"n={s.n}: spread unknown"] if s.n < 2 else []
    state, med = c.noise[key]
    if state is NoiseState.LOW_VS_HISTORY:
        notes.append(f"suspiciously low CV — warm state? (history median {frac_pct(med)})")
    elif state is NoiseState.HIGH_VS_HISTORY:
        notes.append(f"noisier than usual (history median {frac_pct(med)})")
    elif state is NoiseState.LOW_VS_PEERS:
        notes.append(f"suspiciously low CV — warm state? (other {case_id[:2]}* median {frac_pct(med)})")
    case = cases.get(case_id)
    if case is not None and case.kind == "prefill":
        same = [cs for k, cs in cases.items() if cs.kind == "prefill" and cs.depth == case.depth
                and f"{k}/{metric}" in c.stats]
        cvs = {cs.id: c.stats[f"{cs.id}/{metric}"].cv for cs in same}
        if (len(same) >= 3 and same[0].id == case_id and all(v is not None for v in cvs.values())
                and cv == max(cvs.values())):
            notes.append("lower prefill shows higher relative variance")
    if case is not None and case.kind == "decode":
        shorter = [cs for k, cs in cases.items() if cs.kind == "decode" and cs.depth == case.depth
                   and cs.concurrency == case.concurrency and cs.tg < case.tg and f"{k}/{metric}" in c.stats]
        if shorter:
            prev = c.stats[f"{shorter[-1].id}/{metric}"]
            drop = 100.0 * (prev.mean - s.mean) / abs(prev.mean) if prev.mean else 0.0
            if drop > DECODE_DROP_PCT:
                notes.append(f"{drop:.1f}% slower than {shorter[-1].id}: degrades at longer output")
    if s.flagged:
        flags = s.result.flags if s.result is not None else {}
        notes.append(f"{s.flagged} flagged sample(s) replaced{flags_note(flags)}")
    r = s.result
    if r is not None and r.comparison is not None and r.comparison.dropped_current:
        notes.append(f"{r.comparison.dropped_current} outlier(s) set aside")
    return notes


def _insight(c: ConfigView) -> str | None:
    """'**Key insight**: decode throughput (tg*) median CV ...' over one config's rows."""
    keys = [primary_key(cs) for cs in c.cases.values() if primary_key(cs) in c.stats]
    dec = [c.stats[k].cv for k in keys if k.endswith("/tg_tps") and c.stats[k].cv is not None]
    pre = [c.stats[k].cv for k in keys if k.endswith("/pp_tps") and c.stats[k].cv is not None]
    parts = []
    if dec:
        parts.append(f"decode throughput (tg*) median CV {frac_pct(statistics.median(dec))}")
    if pre:
        parts.append(f"prefill throughput (pp*) median CV {frac_pct(statistics.median(pre))}")
    if not parts:
        return None
    line = "**Key insight**: " + "; ".join(parts)
    if dec and pre and statistics.median(dec) > 0:
        ratio = statistics.median(pre) / statistics.median(dec)
        if ratio >= 2:
            line += f" — prefill is {ratio:.0f}× noisier relative to its mean"
    return line + "."


def _best_results(page: Page) -> list[BestRow]:
    keys = [(primary_key(c), f"{c.id} ({METRIC_UNITS[c.primary_metric]})") for c in page.decode + page.prefill]
    if page.ttft is not None:
        keys.append((f"{page.ttft.id}/{TTFT_METRIC}", f"TTFT@{page.ttft.id} (ms)"))
    rows = []
    for key, label in keys:
        metric = key.partition("/")[2]
        candidates: list[tuple[float, str, str]] = []  # value, config, date
        reference = None
        for c in page.configs:
            s = c.stats.get(key)
            stored = c.baseline.metrics.get(key) if c.baseline is not None else None
            if reference is None:
                if stored is not None:
                    reference = stored.mean
                elif s is not None and s.result is not None and s.result.baseline is not None:
                    reference = s.result.baseline.mean
            if s is not None:
                candidates.append((s.mean, c.name, s.date))
            if stored is not None and s is not None and s.source == "run":
                candidates.append((stored.mean, f"{c.name} (baseline)", c.baseline.updated))
        if candidates:
            best = (max if HIGHER_IS_BETTER[metric] else min)(candidates, key=lambda t: t[0])
            rows.append(BestRow(label, reference, *best))
    return rows


def _run_log_row(r: RunLogRecord) -> RunLogRow:
    return RunLogRow(r.run_id or "-", r.date, r.config or "-", r.tg32, r.hardware_key or "-", r.git_sha or "-", r.notes)


def _run_log(records: list[RunLogRecord], run_log: list[RunLogRecord] | None,
             page: Page, baselines: dict[str, BaselineFile]) -> tuple[list[RunLogRow], bool]:
    """The run log's records, then this session's (`records`) not yet in it;
    without any, the stored baselines' history (True: the rows come from there)."""
    logged = list(run_log or [])
    seen = {r.run_id for r in logged}
    logged += [r for r in records if r.run_id not in seen]
    if logged:
        return [_run_log_row(r) for r in logged], False
    words = {c.name: c.baseline_words for c in page.configs}
    rows = []
    for name, bf in baselines.items():
        m = bf.metrics.get(HEADLINE_KEY)
        notes = "; ".join(s for s in (words.get(name, ""), bf.source) if s)
        entries = [(h.date, h.mean) for h in m.history] if m is not None and m.history else [
            (bf.updated, m.mean if m is not None else None)]
        for i, (date, mean) in enumerate(entries, 1):
            rows.append(RunLogRow(f"{bf.server}-v{i}", str(date or ""), bf.server, mean, bf.hardware_key or "-",
                                  str(bf.environment.run.git_sha or "-"), notes))
    return sorted(rows, key=lambda r: r.date), bool(rows)
