"""The results page (Markdown), in the shape of the hand-kept
BENCHMARK_RESULTS.md it replaces: current best results, comparison matrix
(configs x tg32/tg128/tg256/pp2048/TTFT, pending rows, target rows),
variance analysis, one section per config (environment, server config,
observed runtime config, results), targets, run log.

`render` works from a live session, from stored data only (baseline files,
run log, result JSONs read back with `results.load`), or both: a config that
measured in `session` shows those numbers; one that did not shows its stored
baseline. Numbers are formatted here only; the result objects stay numbers.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import yaml

from pytest_mxfp4 import __version__
from pytest_mxfp4.formats.baselines import BaselineFile
from pytest_mxfp4.formats.config import HIGHER_IS_BETTER, METRIC_UNITS, Case, Matrix, Target
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.stats.samples import NoiseState, Verdict, noise_state
from pytest_mxfp4.report.acceptance import ACCEPT_METRIC, LENGTH_METRIC, from_results, sentence
from pytest_mxfp4.report.format import num, spread
from pytest_mxfp4.report.terminal import flags_note
from pytest_mxfp4.report.format import when as _when
from pytest_mxfp4.report.page_model import ConfigView, Page, StatView, build
from pytest_mxfp4.report.history import HEADLINE_KEY, observed_summary, run_log_records, short_key, verdict_summary

# Columns of the comparison matrix, as on the hand-kept page; those the data
# and matrix don't have are left out (a matrix with none of them shows its own).
MATRIX_CASES = ("tg32", "tg128", "tg256", "pp2048")
TTFT_METRIC = "e2e_ttft_ms"
DECODE_DROP_PCT = 1.0  # a longer decode this much slower than the shorter one gets a note


def _primary_key(case: Case) -> str:
    return f"{case.id}/{case.primary_metric}"


def _ttft_case(page: Page, targets: Iterable[Target]) -> Case | None:
    """The prefill case whose TTFT the page shows: pp2048 where present, else
    the longest prompt with a TTFT number."""
    have = {k for c in page.configs for k in c.stats} | {t.metric for t in targets}
    with_ttft = [c for c in page.prefill if f"{c.id}/{TTFT_METRIC}" in have]
    for c in with_ttft:
        if c.id == "pp2048":
            return c
    return with_ttft[-1] if with_ttft else None


# --------------------------------------------------------------------------
# Formatting


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or " "


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("-" * (len(h) + 2) for h in headers) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _pm(s: StatView) -> str:
    return f"{s.mean:.2f} ± {s.stdev:.2f}"


def _day(iso: str) -> str:
    return iso[:10] if len(iso) >= 10 and iso[4:5] == "-" else (iso or "-")


def _exact(v: float) -> str:
    return f"{v:.2f}"


def _pct(frac: float | None) -> str:
    return f"{100 * frac:.2f}%" if frac is not None and math.isfinite(frac) else "-"


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists of scalars: `prompt_lengths: [512, 2048]`."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def _yaml_block(data: dict[str, Any]) -> list[str]:
    if not data:
        return ["```yaml", "# (nothing recorded)", "```"]
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return ["```yaml", *text.rstrip("\n").splitlines(), "```"]


def _reason(text: str) -> str:
    """The first clause of a pending/skip reason, capitalised, for a table cell."""
    short = text
    for sep in (" (", "; ", ": needs", "\n"):
        if sep in short:
            short = short.split(sep, 1)[0]
    short = short.strip().rstrip(".")
    return short[:1].upper() + short[1:]


# --------------------------------------------------------------------------
# Sections


def _best_results(page: Page, ttft: Case | None) -> list[str]:
    configs, cases = page.configs, page.decode + page.prefill
    keys = [(_primary_key(c), f"{c.id} ({METRIC_UNITS[c.primary_metric]})") for c in cases]
    if ttft is not None:
        keys.append((f"{ttft.id}/{TTFT_METRIC}", f"TTFT@{ttft.id} (ms)"))
    rows = []
    for key, label in keys:
        metric = key.partition("/")[2]
        hib = HIGHER_IS_BETTER[metric]
        candidates: list[tuple[float, str, str]] = []  # value, config, date
        reference = None
        for c in configs:
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
        if not candidates:
            continue
        pick = max if hib else min
        best = pick(candidates, key=lambda t: t[0])
        rows.append([label, num(reference), num(best[0]), best[1], _day(best[2])])
    if not rows:
        return ["_No measurements yet._"]
    return _table(["Metric", "Baseline", "Best", "Config", "Date"], rows)


def _matrix_columns(page: Page, matrix: Matrix | None, targets: list[Target]) -> list[Case]:
    configs, pool = page.configs, page.decode + page.prefill
    have = {k.partition("/")[0] for c in configs for k in c.stats} | {t.metric.partition("/")[0] for t in targets}
    if matrix is not None:
        have |= {c.id for c in matrix.workloads.cases}
    chosen = [c for cid in MATRIX_CASES for c in pool if c.id == cid and cid in have]
    for kind in ("decode", "prefill"):  # a matrix without the page's usual cases shows its own (two per kind)
        if not any(c.kind == kind for c in chosen):
            chosen += [c for c in pool if c.kind == kind and c.id in have][:2]
    return chosen


def _config_notes(c: ConfigView) -> str:
    if c.pending:
        return _reason(c.pending)
    parts = []
    if c.error:
        parts.append(f"Error: {c.error.splitlines()[0]}")
    if c.skipped:
        parts.append(f"Skipped: {_reason(c.skipped)}")
    obs = observed_summary(c.record.observed if c.record else None)
    if not obs and c.baseline is not None:
        obs = observed_summary(c.baseline.environment.observed)
    if obs:
        parts.append(obs)
    if c.source == "run":
        v = verdict_summary(c.results)
        if v:
            parts.append(v)
        errs = [short_key(r) for r in c.results if r.error]
        if errs and not v:
            parts.append("error: " + ", ".join(errs))
    elif c.source == "baseline":
        v = verdict_summary(c.results)  # this run measured nothing usable: say why
        if v:
            parts.append(v)
        parts.append(f"stored baseline {_day(c.date)}")
    return "; ".join(parts) or "Not measured yet"


def _ttft_cell(s: StatView | None) -> str:
    if s is None:
        return "-"
    # the page reports TTFT p50; where only a mean is stored, it is marked approximate
    return f"{num(s.median)} ms" if s.median is not None else f"~{num(s.mean)} ms"


def _acceptance_case(configs: list[ConfigView], cols: list[Case]) -> Case | None:
    """The decode case whose acceptance the matrix shows (the first column that has it)."""
    for case in cols:
        if case.kind == "decode" and any(f"{case.id}/{ACCEPT_METRIC}" in c.stats for c in configs):
            return case
    return None


def _acceptance_cell(c: ConfigView, case: Case) -> str:
    """'100% · 3.88': accepted / drafted tokens, and the mean acceptance length."""
    a, n = c.stats.get(f"{case.id}/{ACCEPT_METRIC}"), c.stats.get(f"{case.id}/{LENGTH_METRIC}")
    if a is None:
        return "-"
    return f"{a.mean:.1f}%" + (f" · {n.mean:.2f}" if n is not None else "")


def _comparison_matrix(page: Page, matrix: Matrix | None, targets: list[Target], ttft: Case | None) -> list[str]:
    configs = page.configs
    cols = _matrix_columns(page, matrix, targets)
    acc_case = _acceptance_case(configs, cols)
    acc_at = 1 + max((i for i, c in enumerate(cols) if c.kind == "decode"), default=-1)
    headers = ["Config", *(c.id for c in cols), "TTFT p50", "Notes"]
    if acc_case is not None:  # speculative decoding: acceptance beside tg
        headers.insert(1 + acc_at, f"accept {acc_case.id}")
    best: dict[str, float] = {}  # bold marks the best of two or more configs
    for case in cols:
        vals = [c.stats[_primary_key(case)].mean for c in configs if _primary_key(case) in c.stats]
        if len(vals) > 1:
            best[case.id] = (max if HIGHER_IS_BETTER[case.primary_metric] else min)(vals)
    rows = []
    for c in configs:
        cells = []
        for case in cols:
            s = c.stats.get(_primary_key(case))
            if s is None:
                cells.append("-")
            else:
                text = num(s.mean)
                cells.append(f"**{text}**" if s.mean == best.get(case.id) else text)
        if acc_case is not None:
            cells.insert(acc_at, _acceptance_cell(c, acc_case))
        tt = c.stats.get(f"{ttft.id}/{TTFT_METRIC}") if ttft is not None else None
        name = f"**{c.name}**" if c.stats else c.name
        rows.append([name, *cells, _ttft_cell(tt), _config_notes(c)])
    if targets:
        rows.append([""] * len(headers))
        by_engine: dict[str, list[Target]] = {}
        for t in targets:
            by_engine.setdefault(t.engine, []).append(t)
        for engine, ts in by_engine.items():
            cells, extra = [], []
            used = set()
            for case in cols:
                hit = [t for t in ts if t.metric in (case.id, _primary_key(case))]
                cells.append(_exact(hit[0].value) if hit else "-")
                used |= {id(t) for t in hit[:1]}
            if acc_case is not None:
                cells.insert(acc_at, "-")
            tt = [t for t in ts if ttft is not None and t.metric == f"{ttft.id}/{TTFT_METRIC}"]
            used |= {id(t) for t in tt[:1]}
            extra = [f"{t.metric} {_exact(t.value)}{(' ' + t.unit) if t.unit else ''}" for t in ts if id(t) not in used]
            rows.append([f"**{engine}**", *cells, f"{_exact(tt[0].value)} ms" if tt else "-",
                         "; ".join(["Target", *extra])])
    return _table(headers, rows)


def _variance_notes(c: ConfigView, key: str, s: StatView) -> list[str]:
    cases = c.cases  # in page order
    notes = []
    cv = s.cv
    case_id, _, metric = key.partition("/")
    if cv is None:
        return [f"n={s.n}: spread unknown"] if s.n < 2 else []
    peers = [p.cv for k, p in c.stats.items() if k != key and k.partition("/")[2] == metric and p.cv is not None]
    state, med = noise_state(cv, s.history_cv, peers)
    if state is NoiseState.LOW_VS_HISTORY:
        notes.append(f"suspiciously low CV — warm state? (history median {_pct(med)})")
    elif state is NoiseState.HIGH_VS_HISTORY:
        notes.append(f"noisier than usual (history median {_pct(med)})")
    elif state is NoiseState.LOW_VS_PEERS:
        notes.append(f"suspiciously low CV — warm state? (other {case_id[:2]}* median {_pct(med)})")
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


def _variance(page: Page) -> list[str]:
    out: list[str] = []
    for c in page.configs:
        if not c.stats:
            continue
        keys = [_primary_key(cs) for cs in c.cases.values()]
        keys = [k for k in keys if k in c.stats]
        if not keys:
            continue
        rows = []
        for k in keys:
            s = c.stats[k]
            rows.append([k.partition("/")[0], num(s.mean), f"±{num(s.stdev)}", _pct(s.cv), str(s.n),
                         "; ".join(_variance_notes(c, k, s))])
        source = "this run" if c.source == "run" else f"stored baseline, {_day(c.date)}"
        out += [f"### {c.name} ({source})", "", *_table(["Metric", "Mean", "Std Dev", "CV%", "n", "Notes"], rows), ""]
        dec = [c.stats[k].cv for k in keys if k.endswith("/tg_tps") and c.stats[k].cv is not None]
        pre = [c.stats[k].cv for k in keys if k.endswith("/pp_tps") and c.stats[k].cv is not None]
        parts = []
        if dec:
            parts.append(f"decode throughput (tg*) median CV {_pct(statistics.median(dec))}")
        if pre:
            parts.append(f"prefill throughput (pp*) median CV {_pct(statistics.median(pre))}")
        if parts:
            line = "**Key insight**: " + "; ".join(parts)
            if dec and pre and statistics.median(dec) > 0:
                ratio = statistics.median(pre) / statistics.median(dec)
                if ratio >= 2:
                    line += f" — prefill is {ratio:.0f}× noisier relative to its mean"
            out += [line + ".", ""]
    return out or ["_No measurements yet._", ""]


# config.PROMPT_SOURCES in words: where a case's prompt text came from
PROMPT_WORDS = {"random": "random words",
                "text": "natural text from measure/corpus.txt, the project README prose"}


def _workload_section(matrix: Matrix) -> list[str]:
    w = matrix.workloads
    pre = sorted({c.pp for c in w.cases if c.kind == "prefill"})
    dec = sorted({c.tg for c in w.cases if c.kind == "decode"})
    dec_pp = sorted({c.pp for c in w.cases if c.kind == "decode"})
    depths = sorted({c.depth for c in w.cases})
    data: dict[str, Any] = {}
    if pre:
        data["prompt_lengths"] = pre
    if dec:
        data["output_lengths"] = dec
        data["decode_prompt_length"] = dec_pp[0] if len(dec_pp) == 1 else dec_pp
    data["depth"] = depths
    sources = {kind: sorted({c.prompt for c in w.cases if c.kind == kind}) for kind in ("prefill", "decode")}
    if any(c.prompt != "random" for c in w.cases):  # said where a case names another source than random words
        data["prompt_text"] = {kind: ", ".join(PROMPT_WORDS.get(s, s) for s in v) for kind, v in sources.items() if v}
    data.update({"runs": w.runs, "warmup": w.warmup, "latency_mode": w.latency_mode,
                 "max_client_lag_ms": w.max_client_lag_ms, "reset_prefix_cache": w.reset_prefix_cache,
                 "batch_size": 1, "concurrency": _concurrency(matrix), "tool": f"pytest-mxfp4 {__version__}"})
    gates = {"default": matrix.gates.default, **matrix.gates.rules}
    return [*_yaml_block(data), "", "Gates: " + ", ".join(f"`{k}`: {v}" for k, v in gates.items()), ""]


def _concurrency(matrix: Matrix) -> Any:
    """1, the sweep ([1, 2, 4]), or per config where rows state their own."""
    own = {s.name: list(s.concurrency) for s in matrix.servers if s.concurrency and not s.pending}
    levels = list(matrix.workloads.concurrency)
    if not own:
        return levels[0] if levels == [1] else levels
    return {"default": levels, **own}


def _observed_lines(c: ConfigView) -> list[str]:
    observed, src, expect, ok = c.observed, c.observed_source, c.expect, c.expect_ok
    if not observed and not expect:
        return []
    lines = ["```yaml", f"# {src}" if observed else "# nothing observed: no server log was available"]
    for k, v in observed.items():
        line = f"{k}: {_scalar(v)}"
        if k in expect:
            line += "  # as expected" if ok.get(k) else f"  # EXPECTED {_scalar(expect[k])}"
        lines.append(line)
    for k, v in expect.items():
        if k not in observed:
            lines.append(f"# {k}: not observed" + (", as expected" if ok.get(k) else f"; expected {_scalar(v)}"))
    lines.append("```")
    return lines


def _scalar(v: Any) -> str:
    if isinstance(v, (list, dict)):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _result_line(key: str, s: StatView, comment: str = "") -> str:
    case_id, _, metric = key.partition("/")
    name = f"{case_id}_{metric.rsplit('_', 1)[-1]}" if metric in ("pp_tps", "tg_tps") else metric
    line = f"{name}: {_pm(s)}"
    notes = [comment] if comment else []
    r = s.result
    if r is not None:
        if r.error:
            notes.append(f"error: {r.error}")
        elif r.incomparable:
            notes.append(f"incomparable: {r.incomparable}")
        elif r.comparison is not None and r.baseline is not None:
            d = r.comparison.delta_pct
            notes.append(f"{r.verdict.value}" + (f", {d:+.2f}% vs baseline {r.baseline.mean:.2f}" if d is not None else ""))
        elif r.baseline is None:
            notes.append("no baseline")
    return line + (f"   # {'; '.join(notes)}" if notes else "")


def _acceptance_lines(c: ConfigView, case: Case, everything: list | None = None) -> list[str]:
    """Speculative decoding, beside its tg line: acceptance and mean acceptance
    length, and whether acceptance moved with tg."""
    out = []
    for metric in (ACCEPT_METRIC, LENGTH_METRIC):
        s = c.stats.get(f"{case.id}/{metric}")
        if s is not None:
            out.append(_result_line(f"{case.id}/{metric}", s))
    tg = c.stats.get(_primary_key(case))
    if out and tg is not None and tg.result is not None and c.results:
        words = sentence(tg.result.verdict.value, from_results(everything or c.results, tg.result.server, case.id))
        if words:
            out.append(f"# {words}")
    return out


def _results(c: ConfigView, everything: list | None = None) -> list[str]:
    pre = [x for x in c.cases.values() if x.kind == "prefill"]
    dec = [x for x in c.cases.values() if x.kind == "decode" and x.concurrency == 1]
    conc = [x for x in c.cases.values() if x.kind == "decode" and x.concurrency > 1]
    out: list[str] = []
    if pre:
        out += ["#### Prefill Throughput (varying context length)", "```yaml"]
        for case in pre:
            key = _primary_key(case)
            if key in c.stats:
                tt = c.stats.get(f"{case.id}/{TTFT_METRIC}")
                out.append(_result_line(key, c.stats[key], f"TTFT: {tt.mean:.0f}ms" if tt else ""))
        out += ["```", ""]
    if dec:
        pps = sorted({x.pp for x in dec if x.pp})
        head = f" (pp={pps[0]}, varying output length)" if len(pps) == 1 else " (varying output length)"
        out += [f"#### Decode Throughput{head}", "```yaml"]
        for case in dec:
            if _primary_key(case) in c.stats:
                out.append(_result_line(_primary_key(case), c.stats[_primary_key(case)]))
                out += _acceptance_lines(c, case, everything)
        out += ["```", ""]
    out += _concurrent(c, conc)
    for case in pre + dec:
        lat = sorted((k for k in c.stats if k.partition("/")[0] == case.id and k != _primary_key(case)
                      and k.partition("/")[2] not in (ACCEPT_METRIC, LENGTH_METRIC)),
                     key=lambda k: case.metrics.index(k.partition("/")[2]) if k.partition("/")[2] in case.metrics else 99)
        if not lat:
            continue
        where = ([f"pp={case.pp}"] if case.pp else []) + ([f"tg={case.tg}"] if case.kind == "decode" else [])
        where += [f"depth={case.depth}"] if case.depth else []
        out += [f"#### Latency ({', '.join(where)})", "```yaml", *(_result_line(k, c.stats[k]) for k in lat), "```", ""]
    errs = [r for r in c.results if r.error and r.key not in c.stats]
    if errs:
        out += ["#### Not measured", *(f"- `{r.key}`: {r.error}" for r in errs), ""]
    return out


def _concurrent(c: ConfigView, cases: list[Case]) -> list[str]:
    """The concurrency sweep of one config: per stream (each stream's own tg
    and TTFT, as one stream is measured) beside the aggregate (all streams'
    tokens / wall), each with its verdict."""
    if not cases:
        return []
    single = {(x.tg, x.depth): x for x in c.cases.values() if x.kind == "decode" and x.concurrency == 1}
    rows = []
    for case in cases:
        tg, tt, agg = (c.stats.get(f"{case.id}/{m}") for m in ("tg_tps", TTFT_METRIC, "agg_tps"))
        if tg is None and agg is None:
            continue

        def cell(s: StatView | None, with_spread: bool) -> str:
            if s is None:
                return "-"
            text = f"{num(s.mean)} ± {num(s.stdev)}"
            if with_spread and s.result is not None and spread(s.result.samples):
                text += f" ({spread(s.result.samples)})"
            return text

        def verdict(s: StatView | None) -> str:
            r = s.result if s is not None else None
            if r is None:
                return "-"
            d = r.comparison.delta_pct if r.comparison is not None else None
            return r.verdict.value + (f" {d:+.1f}%" if d is not None else "")

        one = single.get((case.tg, case.depth))
        base = c.stats.get(f"{one.id}/tg_tps") if one is not None else None
        scaling = f"{agg.mean / base.mean:.2f}×" if agg is not None and base is not None and base.mean else "-"
        rows.append([f"`{case.id}`", str(case.concurrency), cell(tg, True), cell(tt, True), verdict(tg),
                     cell(agg, False), scaling, verdict(agg)])
    if not rows:
        return []
    pps = sorted({x.pp for x in cases if x.pp})
    head = f" (pp={pps[0]})" if len(pps) == 1 else ""
    return [f"#### Concurrent streams{head}: per stream vs aggregate", "",
            *_table(["Case", "Streams", "Per-stream tg (tok/s)", "Per-stream TTFT (ms)", "tg verdict",
                     "Aggregate (tok/s)", "Aggregate / 1 stream", "Aggregate verdict"], rows), "",
            "Per stream: each stream's own tg and TTFT, measured as one stream is (mean ± sd over every "
            "stream of every round; p50/p99 of the same samples). Aggregate: generated tokens of all "
            "streams / wall from the first request sent to the last token, one value per round. "
            "Aggregate / 1 stream: over the one-stream tg of the same output length.", ""]


def _status(c: ConfigView) -> str:
    if c.error:
        return f"❌ ERROR - {c.error.splitlines()[0]}"
    if c.source == "run":
        bad = [r for r in c.results if r.verdict in (Verdict.REGRESSED, Verdict.ERROR)]
        fails = [r for r in bad if r.fails]
        if fails:
            return f"❌ REGRESSED - {_when(c.date)} ({', '.join(short_key(r) for r in fails)})"
        tail = f" ({len(bad)} warning(s): {', '.join(short_key(r) for r in bad)})" if bad else ""
        return f"✅ COMPLETE - {_when(c.date)}{tail}"
    base = f"; numbers from the stored baseline of {_day(c.date)}" if c.source == "baseline" else ""
    failed = [short_key(r) for r in c.results if r.error]
    if failed:
        return f"💥 NOT MEASURED this run - {len(failed)} metric(s) errored ({', '.join(failed)}){base}"
    if c.skipped:
        return f"⏭ SKIPPED this run - {c.skipped}{base}"
    if c.source == "baseline":
        return f"✅ BASELINE - {_when(c.date)}" + (f" ({c.baseline.source})" if c.baseline and c.baseline.source else "")
    return "NOT RUN"


def _config_section(c: ConfigView, everything: list | None = None) -> list[str]:
    out = [f"## {c.name}", ""]
    if c.description:
        out += [f"_{c.description}_", ""]
    out += [f"**Status**: {_status(c)}", ""]
    out += ["### Environment", *_yaml_block(c.environment_block), ""]
    engine = (c.cfg.engine if c.cfg is not None else "") or "server"
    out += [f"### {'vLLM' if engine == 'vllm' else 'Server'} Configuration", *_yaml_block(c.server_block), ""]
    obs = _observed_lines(c)
    if obs:
        out += ["### Observed Runtime Configuration", *obs, ""]
    if c.stats:
        out += ["### Results", "", *_results(c, everything)]
    notes = list(c.record.notes) if c.record else []
    if notes:
        out += ["### Notes", *(f"- {n}" for n in notes), ""]
    return out + ["---", ""]


def _pending_section(configs: list[ConfigView]) -> list[str]:
    pend = [c for c in configs if c.pending and not c.stats]
    if not pend:
        return []
    out = ["## Pending Configurations", ""]
    out += _table(["Config", "Description", "Status", "Reason"],
                  [[c.name, c.description or "-", "PENDING", c.pending or ""] for c in pend])
    out.append("")
    for c in pend:
        if c.cfg is not None and c.cfg.expect:
            out += [f"### {c.name}: expected configuration", *_yaml_block(dict(c.cfg.expect)), "",
                    f"**Blocker**: {c.pending}", ""]
    return out + ["---", ""]


def _targets_section(targets: list[Target]) -> list[str]:
    if not targets:
        return []
    rows = [[t.engine, t.metric, f"{_exact(t.value)}{(' ' + t.unit) if t.unit else ''}", t.note or "-"] for t in targets]
    return ["## Reference: Competing Engines (targets)", "", *_table(["Engine", "Metric", "Value", "Note"], rows), "",
            "---", ""]


def _baseline_run_log(baselines: dict[str, BaselineFile]) -> list[dict[str, Any]]:
    rows = []
    for bf in baselines.values():
        m = bf.metrics.get(HEADLINE_KEY)
        notes = "; ".join(s for s in (observed_summary(bf.environment.observed), bf.source) if s)
        entries = [(h.date, h.mean) for h in m.history] if m is not None and m.history else [
            (bf.updated, m.mean if m is not None else None)]
        for i, (date, mean) in enumerate(entries, 1):
            rows.append({"run_id": f"{bf.server}-v{i}", "date": date, "config": bf.server, "tg32": mean,
                         "hardware_key": bf.hardware_key, "git_sha": bf.environment.run.git_sha,
                         "notes": notes})
    return sorted(rows, key=lambda r: str(r["date"]))


def _run_log(session: SessionResults, baselines: dict[str, BaselineFile], run_log: list[dict] | None) -> list[str]:
    rows = list(run_log or [])
    seen = {r.get("run_id") for r in rows}
    rows += [r for r in run_log_records(session) if r["run_id"] not in seen]
    origin = ""
    if not rows:
        rows = _baseline_run_log(baselines)
        origin = "_From the stored baselines' history (no run log yet)._"
    if not rows:
        return ["## Run Log", "", "_No runs recorded yet._", ""]
    table = [[str(r.get("run_id") or "-"), _day(str(r.get("date") or "")), str(r.get("config") or "-"),
              num(r["tg32"]) if isinstance(r.get("tg32"), (int, float)) else "-",
              str(r.get("hardware_key") or "-"), str(r.get("git_sha") or "-"), str(r.get("notes") or "")]
             for r in rows]
    out = ["## Run Log", ""]
    if origin:
        out += [origin, ""]
    return out + _table(["Run ID", "Date", "Config", "tg32", "Hardware", "Git SHA", "Notes"], table) + [""]


def _latest_date(configs: list[ConfigView]) -> str:
    dates = sorted(c.date for c in configs if c.date)
    return dates[-1] if dates else ""


def render(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile] | None = None,
           run_log: list[dict] | None = None) -> str:
    """The results page. `baselines` maps server config name -> its stored
    baseline (same hardware as the session); `run_log` is `read_run_log(...)`.
    A config measured in `session` shows those numbers, otherwise its
    baseline's; pending configs and the matrix's targets always appear."""
    baselines = dict(baselines or {})
    page = build(session, matrix, baselines)
    configs = page.configs
    targets = list(matrix.targets) if matrix is not None else []
    if not targets:
        seen: dict[tuple, Target] = {}
        for r in session.results:
            for t in r.targets:
                seen.setdefault((t.engine, t.metric, t.value), t)
        targets = list(seen.values())
    ttft = _ttft_case(page, targets)
    name = (matrix.name if matrix is not None else "") or session.matrix or "pytest-mxfp4"
    hw = session.hardware_key or next((b.hardware_key for b in baselines.values()), "")
    latest = _latest_date(configs)
    intro = f"Generated by pytest-mxfp4 {__version__}"
    if hw:
        intro += f" for hardware `{hw}`"
    if matrix is not None:
        intro += f" from matrix `{matrix.path}`"
    intro += f"; data as of {_when(latest)}." if latest else "; no measurements yet."

    out = [f"# {name} Benchmark Results", "", "Live tracking of benchmark results across configurations.", "",
           intro, "", "---", ""]
    if session.interrupted:  # first thing a reader sees: this run is not a complete one
        from pytest_mxfp4.formats.results import interrupted_line

        out[2:2] = [f"> **⏹️ {interrupted_line(session)}.**", ""]
    out += ["## Current Best Results", "", *_best_results(page, ttft), "", "---", ""]
    out += ["## Comparison Matrix", "", *_comparison_matrix(page, matrix, targets, ttft), ""]
    if ttft is not None:
        out += [f"TTFT is `{ttft.id}/{TTFT_METRIC}` (request sent → first generated token); `~` marks a mean "
                "where only a summary is stored (no samples for a median).", ""]
    out += ["---", "", "## Variance Analysis", "", *_variance(page), "---", ""]
    if matrix is not None:
        out += ["## Workload Parameters", "", *_workload_section(matrix), "---", ""]
    for c in configs:
        if c.stats or c.error or (c.skipped and not c.pending) or (c.record is not None and c.record.info):
            out += _config_section(c, session.results)  # all of them: an A/B head arm's base
    out += _pending_section(configs)
    out += _targets_section(targets)
    out += _run_log(session, baselines, run_log)
    if session.starts is not None:
        # part of the page itself (rendered whole, also by `pytest-mxfp4 report` from the JSON)
        from pytest_mxfp4.report.abreport import page_section

        out += page_section(session.starts).splitlines() + [""]
    if session.shards or session.incomplete:
        out += _shards_section(session)
    out += ["---", "", "## How to Run Benchmarks", "", "```bash"]
    cfg_path = str(matrix.path) if matrix is not None else "configs/<matrix>.yaml"
    out += [f"pytest -m perf --perf-config {cfg_path} --perf-json .perf/results.json",
            f"pytest -m perf --perf-config {cfg_path} --perf-update-baselines   # store as the new baselines",
            f"pytest-mxfp4 report .perf/results.json --config {cfg_path} --out BENCHMARK_RESULTS.md",
            "```", ""]
    return "\n".join(out)


def plots_section(plot_paths: Iterable[Path], page_path: Path) -> str:
    """A 'Trends' section linking trend PNGs relative to the page."""
    import os

    paths = list(plot_paths)
    if not paths:
        return ""
    lines = ["", "## Trends", ""]
    for p in paths:
        rel = os.path.relpath(Path(p).resolve(), Path(page_path).resolve().parent)
        lines.append(f"![{Path(p).stem}]({Path(rel).as_posix()})")
    return "\n".join(lines) + "\n"


def _shards_section(session: SessionResults) -> list[str]:
    """A merged run: which shard ran which configs where, and what is missing."""
    lines = ["## Shards", "",
             "Each config runs on the same shard, and shard K on runner `gb10-shard-K`, every night "
             "(`--perf-shard`); numbers of one config are only compared with that box's.", "",
             "| shard | runner | host | configs | file |", "|---|---|---|---|---|"]
    for sh in sorted(session.shards, key=lambda s: (s.index or 0, s.file)):
        lines.append(f"| {sh.index}/{sh.count} | {sh.runner or '?'} | {sh.host or '?'} "
                     f"| {', '.join(sh.servers) or '(none)'} | {Path(sh.file).name} |")
    if session.incomplete:
        lines += ["", "**Incomplete run:**", ""] + [f"- {p}" for p in session.incomplete]
    return lines + [""]
