"""The results page (Markdown), in the shape of the hand-kept
BENCHMARK_RESULTS.md it replaces: current best results, comparison matrix
(configs x tg32/tg128/tg256/pp2048/TTFT, pending rows, target rows),
variance analysis, one section per config (environment, server config,
observed runtime config, results), targets, run log.

`render` works from a live session, from stored data only (baseline files,
run log, result JSONs read back with `results.load`), or both: a config that
measured in `session` shows those numbers; one that did not shows its stored
baseline. What the page says is decided once, in page_model.build; this
module lays the view out as Markdown and formats its numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from pytest_mxfp4 import __version__
from pytest_mxfp4.formats.baselines import BaselineFile
from pytest_mxfp4.formats.config import HIGHER_IS_BETTER, Case, Matrix, Target
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.formats.runlog import RunLogRecord
from pytest_mxfp4.report.acceptance import ACCEPT_METRIC, LENGTH_METRIC
from pytest_mxfp4.report.format import day, frac_pct, num, spread
from pytest_mxfp4.report.format import when as _when
from pytest_mxfp4.report.page_model import TTFT_METRIC, ConfigView, Page, StatView, build, primary_key

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


def _exact(v: float) -> str:
    return f"{v:.2f}"


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


# --------------------------------------------------------------------------
# Sections


def _best_results(page: Page) -> list[str]:
    if not page.best:
        return ["_No measurements yet._"]
    return _table(["Metric", "Baseline", "Best", "Config", "Date"],
                  [[b.label, num(b.reference), num(b.best), b.config, day(b.date)] for b in page.best])


def _ttft_cell(s: StatView | None) -> str:
    if s is None:
        return "-"
    # the page reports TTFT p50; where only a mean is stored, it is marked approximate
    return f"{num(s.median)} ms" if s.median is not None else f"~{num(s.mean)} ms"


def _acceptance_cell(c: ConfigView, case: Case) -> str:
    """'100% · 3.88': accepted / drafted tokens, and the mean acceptance length."""
    a, n = c.stats.get(f"{case.id}/{ACCEPT_METRIC}"), c.stats.get(f"{case.id}/{LENGTH_METRIC}")
    if a is None:
        return "-"
    return f"{a.mean:.1f}%" + (f" · {n.mean:.2f}" if n is not None else "")


def _comparison_matrix(page: Page) -> list[str]:
    configs, cols, acc_case, targets, ttft = page.configs, page.columns, page.accept_case, page.targets, page.ttft
    acc_at = 1 + max((i for i, c in enumerate(cols) if c.kind == "decode"), default=-1)
    headers = ["Config", *(c.id for c in cols), "TTFT p50", "Notes"]
    if acc_case is not None:  # speculative decoding: acceptance beside tg
        headers.insert(1 + acc_at, f"accept {acc_case.id}")
    best: dict[str, float] = {}  # bold marks the best of two or more configs
    for case in cols:
        vals = [c.stats[primary_key(case)].mean for c in configs if primary_key(case) in c.stats]
        if len(vals) > 1:
            best[case.id] = (max if HIGHER_IS_BETTER[case.primary_metric] else min)(vals)
    rows = []
    for c in configs:
        cells = []
        for case in cols:
            s = c.stats.get(primary_key(case))
            if s is None:
                cells.append("-")
            else:
                text = num(s.mean)
                cells.append(f"**{text}**" if s.mean == best.get(case.id) else text)
        if acc_case is not None:
            cells.insert(acc_at, _acceptance_cell(c, acc_case))
        tt = c.stats.get(f"{ttft.id}/{TTFT_METRIC}") if ttft is not None else None
        name = f"**{c.name}**" if c.stats else c.name
        rows.append([name, *cells, _ttft_cell(tt), c.notes])
    if targets:
        rows.append([""] * len(headers))
        by_engine: dict[str, list[Target]] = {}
        for t in targets:
            by_engine.setdefault(t.engine, []).append(t)
        for engine, ts in by_engine.items():
            cells, extra = [], []
            used = set()
            for case in cols:
                hit = [t for t in ts if t.metric in (case.id, primary_key(case))]
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


def _variance(page: Page) -> list[str]:
    out: list[str] = []
    for c in page.configs:
        if not c.variance:
            continue
        rows = [[v.case_id, num(v.stat.mean), f"±{num(v.stat.stdev)}", frac_pct(v.stat.cv), str(v.stat.n),
                 "; ".join(v.notes)] for v in c.variance]
        source = "this run" if c.source == "run" else f"stored baseline, {day(c.date)}"
        out += [f"### {c.name} ({source})", "", *_table(["Metric", "Mean", "Std Dev", "CV%", "n", "Notes"], rows), ""]
        if c.insight:
            out += [c.insight, ""]
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


def _acceptance_lines(c: ConfigView, case: Case) -> list[str]:
    """Speculative decoding, beside its tg line: acceptance and mean acceptance
    length, and whether acceptance moved with tg."""
    out = [_result_line(f"{case.id}/{m}", c.stats[f"{case.id}/{m}"])
           for m in (ACCEPT_METRIC, LENGTH_METRIC) if f"{case.id}/{m}" in c.stats]
    if out and case.id in c.accept_sentence:
        out.append(f"# {c.accept_sentence[case.id]}")
    return out


def _results(c: ConfigView) -> list[str]:
    pre = [x for x in c.cases.values() if x.kind == "prefill"]
    dec = [x for x in c.cases.values() if x.kind == "decode" and x.concurrency == 1]
    conc = [x for x in c.cases.values() if x.kind == "decode" and x.concurrency > 1]
    out: list[str] = []
    if pre:
        out += ["#### Prefill Throughput (varying context length)", "```yaml"]
        for case in pre:
            key = primary_key(case)
            if key in c.stats:
                tt = c.stats.get(f"{case.id}/{TTFT_METRIC}")
                out.append(_result_line(key, c.stats[key], f"TTFT: {tt.mean:.0f}ms" if tt else ""))
        out += ["```", ""]
    if dec:
        pps = sorted({x.pp for x in dec if x.pp})
        head = f" (pp={pps[0]}, varying output length)" if len(pps) == 1 else " (varying output length)"
        out += [f"#### Decode Throughput{head}", "```yaml"]
        for case in dec:
            if primary_key(case) in c.stats:
                out.append(_result_line(primary_key(case), c.stats[primary_key(case)]))
                out += _acceptance_lines(c, case)
        out += ["```", ""]
    out += _concurrent(c, conc)
    for case in pre + dec:
        lat = sorted((k for k in c.stats if k.partition("/")[0] == case.id and k != primary_key(case)
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


def _config_section(c: ConfigView) -> list[str]:
    out = [f"## {c.name}", ""]
    if c.description:
        out += [f"_{c.description}_", ""]
    out += [f"**Status**: {c.status}", ""]
    out += ["### Environment", *_yaml_block(c.environment_block), ""]
    engine = (c.cfg.engine if c.cfg is not None else "") or "server"
    out += [f"### {'vLLM' if engine == 'vllm' else 'Server'} Configuration", *_yaml_block(c.server_block), ""]
    obs = _observed_lines(c)
    if obs:
        out += ["### Observed Runtime Configuration", *obs, ""]
    if c.stats:
        out += ["### Results", "", *_results(c)]
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


def _run_log(page: Page) -> list[str]:
    if not page.run_log:
        return ["## Run Log", "", "_No runs recorded yet._", ""]
    table = [[r.run_id, day(r.date), r.config, num(r.tg32) if r.tg32 is not None else "-", r.hardware_key,
              r.git_sha, r.notes] for r in page.run_log]
    out = ["## Run Log", ""]
    if page.run_log_from_baselines:
        out += ["_From the stored baselines' history (no run log yet)._", ""]
    return out + _table(["Run ID", "Date", "Config", "tg32", "Hardware", "Git SHA", "Notes"], table) + [""]


def render(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile] | None = None,
           run_log: list[RunLogRecord] | None = None) -> str:
    """The results page. `baselines` maps server config name -> its stored
    baseline (same hardware as the session); `run_log` is `read_run_log(...)`.
    A config measured in `session` shows those numbers, otherwise its
    baseline's; pending configs and the matrix's targets always appear."""
    return layout(build(session, matrix, dict(baselines or {}), run_log))


def layout(page: Page) -> str:
    """The page's Markdown, section by section, from its view."""
    matrix, ttft = page.matrix, page.ttft
    intro = f"Generated by pytest-mxfp4 {__version__}"
    if page.hardware:
        intro += f" for hardware `{page.hardware}`"
    if matrix is not None:
        intro += f" from matrix `{matrix.path}`"
    intro += f"; data as of {_when(page.latest)}." if page.latest else "; no measurements yet."

    out = [f"# {page.title} Benchmark Results", "", "Live tracking of benchmark results across configurations.", "",
           intro, "", "---", ""]
    if page.interrupted:  # first thing a reader sees: this run is not a complete one
        out[2:2] = [f"> **⏹️ {page.interrupted}.**", ""]
    out += ["## Current Best Results", "", *_best_results(page), "", "---", ""]
    out += ["## Comparison Matrix", "", *_comparison_matrix(page), ""]
    if ttft is not None:
        out += [f"TTFT is `{ttft.id}/{TTFT_METRIC}` (request sent → first generated token); `~` marks a mean "
                "where only a summary is stored (no samples for a median).", ""]
    out += ["---", "", "## Variance Analysis", "", *_variance(page), "---", ""]
    if matrix is not None:
        out += ["## Workload Parameters", "", *_workload_section(matrix), "---", ""]
    for c in page.configs:
        if c.shown:
            out += _config_section(c)
    out += _pending_section(page.configs)
    out += _targets_section(page.targets)
    out += _run_log(page)
    if page.ab_section is not None:  # part of the page itself, also when rebuilt from the JSON
        out += page.ab_section.splitlines() + [""]
    if page.shards or page.incomplete:
        out += _shards_section(page)
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


def _shards_section(page: Page) -> list[str]:
    """A merged run: which shard ran which configs where, and what is missing."""
    lines = ["## Shards", "",
             "Each config runs on the same shard, and shard K on runner `gb10-shard-K`, every night "
             "(`--perf-shard`); numbers of one config are only compared with that box's.", "",
             "| shard | runner | host | configs | file |", "|---|---|---|---|---|"]
    for sh in page.shards:
        lines.append(f"| {sh.index}/{sh.count} | {sh.runner or '?'} | {sh.host or '?'} "
                     f"| {', '.join(sh.servers) or '(none)'} | {Path(sh.file).name} |")
    if page.incomplete:
        lines += ["", "**Incomplete run:**", ""] + [f"- {p}" for p in page.incomplete]
    return lines + [""]
