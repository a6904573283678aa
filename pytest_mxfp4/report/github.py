"""GitHub Actions job summary: a compact verdict table appended to
`$GITHUB_STEP_SUMMARY`, with the full results page folded underneath.
Does nothing outside GitHub Actions (the variable unset)."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.stats.samples import Verdict
from pytest_mxfp4.report.format import num, pct

# GitHub accepts up to 1 MiB of summary per step; keep well under it.
MAX_SUMMARY_BYTES = 900 * 1024
ICONS = {Verdict.PASS: "✅", Verdict.IMPROVED: "🚀", Verdict.REGRESSED: "❌", Verdict.INCONCLUSIVE: "❔",
         Verdict.NO_BASELINE: "➖", Verdict.ERROR: "💥", Verdict.INCOMPARABLE: "➖"}


def compact_table(session: SessionResults) -> str:
    title = f"### pytest-mxfp4: {session.matrix or 'perf'}"
    if session.hardware_key:
        title += f" on `{session.hardware_key}`"
    lines = [title, ""]
    if session.interrupted:
        from pytest_mxfp4.formats.results import interrupted_line

        lines += [f"**⏹️ {interrupted_line(session)}.**", ""]
    if session.results:
        lines += ["| Config | Metric | Mean ± SD | CV | n | Baseline | Δ | Verdict | Gate |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in session.results:
            s, b, c = r.summary, r.baseline, r.comparison
            v = r.verdict
            verdict = f"{ICONS.get(v, '')} {v.value}".strip() + (
                " (confirmed)" if r.confirmed and v is Verdict.REGRESSED else "")
            if r.fails:
                verdict = f"**{verdict}**"
            lines.append("| " + " | ".join([
                r.server, r.key, f"{num(s.mean)} ± {num(s.stdev)} {r.unit}" if s else "-",
                pct(s.cv * 100, signed=False) if s else "-", str(s.n if s else 0),
                num(b.mean) if b else "-", pct(c.delta_pct) if c and c.delta_pct is not None else "-", verdict, r.gate,
            ]).replace("\n", " ") + " |")
    else:
        lines.append("_No metric was measured._")
    notes = []
    for rec in session.servers.values():
        if rec.skipped:
            notes.append(f"- skipped `{rec.name}`: {rec.skipped}")
        elif rec.error:
            notes.append(f"- error `{rec.name}`: {rec.error.splitlines()[0]}")
    failed = session.failed
    if failed:
        notes.append(f"- **FAILED**: {len(failed)} gated metric(s): " + ", ".join(f"`{r.server} {r.key}`" for r in failed))
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_step_summary(session: SessionResults, markdown_text: str | None = None) -> Path | None:
    """Append the compact table (and `markdown_text`, folded, when it fits)
    to `$GITHUB_STEP_SUMMARY`. Returns the file written, or None when the
    variable is unset (not on GitHub Actions)."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    text = compact_table(session)
    if markdown_text:
        folded = f"\n<details><summary>Full results page</summary>\n\n{markdown_text.rstrip()}\n\n</details>\n"
        if len((text + folded).encode()) <= MAX_SUMMARY_BYTES:
            text += folded
        else:
            text += f"\n_Full results page left out: {len(markdown_text.encode()) // 1024} KiB is over the summary limit._\n"
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        raise PerfUserError(f"{path}: cannot append the GitHub step summary ($GITHUB_STEP_SUMMARY): {e.strerror}") from None
    return path
