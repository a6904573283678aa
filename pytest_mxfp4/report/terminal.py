"""The terminal summary: server x metric with mean ± sd, CV, baseline, Δ%,
verdict, gate and targets."""

from __future__ import annotations

from pytest_mxfp4.formats.results import MetricResult, SessionResults
from pytest_mxfp4.stats.samples import Verdict
from pytest_mxfp4.report import acceptance
from pytest_mxfp4.report.format import num, pct, scope, spread

HEADERS = ("server", "metric", "mean ± sd", "CV", "n", "baseline", "Δ", "verdict", "gate", "target")


def rows(session: SessionResults) -> list[tuple[str, ...]]:
    out = []
    for r in session.results:
        s, b, c = r.summary, r.baseline, r.comparison
        mean_sd = f"{num(s.mean)} ± {num(s.stdev)} {r.unit}" if s else "-"
        verdict = r.verdict.value + (" (confirmed)" if r.confirmed and r.verdict is Verdict.REGRESSED else "")
        targets = ", ".join(f"{t.engine} {num(t.value)}" for t in r.targets) or ""
        out.append((
            r.server, r.key + (f" ({scope(r.case, r.metric)})" if scope(r.case, r.metric) else ""), mean_sd, pct(s.cv * 100, signed=False) if s else "-", str(s.n if s else 0),
            num(b.mean) if b else "-", pct(c.delta_pct) if c else "-", verdict, r.gate, targets,
        ))
    return out


def render(session: SessionResults) -> list[str]:
    table = [HEADERS, *rows(session)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for rec in session.servers.values():
        if rec.skipped:
            lines.append(f"skipped {rec.name}: {rec.skipped}")
        elif rec.error:
            lines.append(f"error   {rec.name}: {rec.error.splitlines()[0]}")
    for r in session.results:
        if r.error:
            lines.append(f"error   {r.server} {r.key}: {r.error}")
        elif r.incomparable:
            lines.append(f"incomparable {r.server} {r.key}: {r.incomparable}")
        elif r.comparison and r.verdict in (Verdict.REGRESSED, Verdict.INCONCLUSIVE):
            lines.append(f"{r.verdict.value:<8} {r.server} {r.key}: {r.comparison.reason}")
        if r.metric == acceptance.TG_METRIC and r.comparison is not None:
            words = acceptance.sentence(r.verdict.value, acceptance.from_results(session.results, r.server, r.case.id))
            if words:
                lines.append(f"{'':<8} {r.server} {r.key}: {words}")
        if r.flagged_samples:
            lines.append(f"note    {r.server} {r.key}: {r.flagged_samples} flagged sample(s) replaced"
                         + flags_note(r.flags))
    return lines


def describe(r: MetricResult) -> str:
    """One line for a failing or warning metric."""
    if r.error:
        return f"{r.server} {r.key}: error: {r.error}"
    if r.incomparable:
        return f"{r.server} {r.key}: incomparable: {r.incomparable}"
    c = r.comparison
    return f"{r.server} {r.key}: {r.verdict.value} ({c.delta_pct:+.2f}% vs baseline {r.baseline.mean:.4g}; {c.reason})"


def case_lines(results: list[MetricResult]) -> list[str]:
    """Progress as each case finishes: `[server] tg32  tg_tps 31.6 ± 0.1 tok/s
    CV 0.3% n=5 pass (Δ -0.1%) | e2e_ttft_ms 210 ms pass`."""
    if not results:
        return []
    parts = []
    for r in results:
        if r.summary is None:  # nothing measured: say why on the same line
            parts.append(f"{r.metric} {r.verdict.value}" + (f": {r.error}" if r.error else ""))
            continue
        s = r.summary
        label = f"{scope(r.case, r.metric)} {r.metric}".lstrip()
        text = f"{label} {num(s.mean)}"
        if r is results[0] or r.metric == "agg_tps":
            text += f" ± {num(s.stdev)} {r.unit} CV {pct(s.cv * 100, signed=False)} n={s.n}"
        else:
            text += f" {r.unit}"
        if scope(r.case, r.metric) == "per stream" and spread(r.samples):
            text += f" ({spread(r.samples)})"
        text += f" {r.verdict.value}"
        if r.comparison is not None and r.comparison.delta_pct is not None:
            text += f" (Δ {pct(r.comparison.delta_pct)})"
        parts.append(text)
    first = results[0]
    streams = f" ({first.case.concurrency} streams)" if first.case.concurrency > 1 else ""
    return [f"[{first.server}] {first.case.id}{streams}  " + " | ".join(parts)]


# What a flag says about who was the limit, for the notes.
FLAG_MEANING = {
    "client-behind": "the client was the limit, not the server",
    "client-lag": "the client was held up",
    "burst-delivery": "the server held tokens back and flushed them",
    "prefix-cache-hit": "the prefix cache answered",
    "gpu-throttled": "the GPU was throttled",
    "server-timing-disagrees": "client and server decode rates disagree",
}


def flags_note(flags: dict[str, int]) -> str:
    """' (client-behind 3: the client was the limit, not the server)' or ''."""
    if not flags:
        return ""
    parts = [f"{f} {n}" + (f": {FLAG_MEANING[f]}" if f in FLAG_MEANING else "") for f, n in flags.items()]
    return " (" + "; ".join(parts) + ")"
