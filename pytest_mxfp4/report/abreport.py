"""Words for server starts and A/B runs: terminal lines, the Markdown
section of the results page, and the ready-to-post PR comment.

Reads the typed records of the result format: `StartsRecord` (the plan and
what each start saw) and its `ABEntry` list, one per config, case and metric
of an A/B run."""

from __future__ import annotations

from pytest_mxfp4.formats.results import ABEntry, StartsRecord

from pytest_mxfp4.report import acceptance

ICON = {"pass": "✅", "improved": "🚀", "regressed": "❌", "inconclusive": "❔", "error": "💥",
        "no-baseline": "➖", "incomparable": "≠"}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _ci(e: ABEntry) -> str:
    if e.delta_pct is None:
        return "–"
    return f"{e.delta_pct:+.1f}% [{e.ci_low_pct:+.1f}%, {e.ci_high_pct:+.1f}%]"


def terminal_lines(entries: list[ABEntry]) -> list[str]:
    """One line per A/B metric: both arms side by side with delta and CI."""
    if not entries:
        return []
    out = ["A/B (head = base + " + ", ".join(entries[0].overrides) + "): start means as units"]
    for e in entries:
        b, h = _mean(e.base_starts), _mean(e.head_starts)
        line = (f"  {e.server} {e.case}/{e.metric}: base {_num(b)} ({len(e.base_starts)} starts)  "
                f"head {_num(h)} ({len(e.head_starts)} starts)  Δ {_ci(e)}  -> {e.verdict}"
                f" (gate {e.gate})")
        out.append(line)
        if e.error:
            out.append(f"    {e.error}")
        else:
            out += [f"    {x}" for x in evidence_lines(e, entries)]
        so = e.baseline_second_opinion
        if so:
            out.append(f"    stored baseline (second opinion, warn only): {so.verdict}"
                       + (f", {so.delta_pct:+.1f}%" if so.delta_pct is not None else ""))
    return out


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.2f}%" if signed else f"{x:.2f}%"


def evidence_lines(e: ABEntry, entries: list[ABEntry] | None = None) -> list[str]:
    """What the verdict rests on: the noise and where it came from, what the
    interval still admits, what would decide it, what was left out; for tg
    of a speculative-decoding case (`entries`: all of the A/B), whether
    acceptance moved with it."""
    out = []
    if entries and e.metric == acceptance.TG_METRIC:
        words = acceptance.sentence(e.verdict, acceptance.from_ab(entries, e.server, e.case))
        if words:
            out.append(words)
    if e.noise:
        out.append(f"noise: {e.noise}")
    if e.verdict == "inconclusive" and e.worst_pct is not None:
        n = e.starts_to_decide
        # worst_pct is an effect (- = worse), whatever the metric's direction
        out.append(f"could be as bad as {e.worst_pct:+.1f}% "
                   f"(a pass must rule out {e.threshold_pct or 0:.1f}%)"
                   + (f"; about {n} start(s) per arm would decide it" if n else ""))
    elif e.verdict == "pass" and e.threshold_pct is not None:
        out.append(f"pass earned: the interval rules out a drop beyond {e.threshold_pct:.1f}%")
    if e.disturbed:
        out.append(f"left out as disturbed: {e.disturbed}")
    if e.outliers:
        out.append("outlier start(s), kept in the interval: " + "; ".join(e.outliers))
    return out


def starts_used(entries: list[ABEntry]) -> str:
    """Starts per arm the verdicts used (after extensions and replacements)."""
    ns = sorted({(len(e.base_starts), len(e.head_starts)) for e in entries if e.gate == "fail"}
                or {(len(e.base_starts), len(e.head_starts)) for e in entries})
    if not ns:
        return "no"
    return ", ".join(f"{b}" if b == h else f"{b} base / {h} head" for b, h in ns)


def _table(entries: list[ABEntry]) -> list[str]:
    rows = ["| config | case | metric | base (starts) | head (starts) | Δ head vs base [CI] "
            "| between-start CV (measured) | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        b, h = _mean(e.base_starts), _mean(e.head_starts)
        cv = e.between_start_cv_pct
        v = e.verdict or "error"
        gate = "" if e.gate == "fail" else f" ({e.gate})"
        rows.append(f"| {e.server} | {e.case} | {e.metric} | {_num(b)} ({len(e.base_starts)}) | "
                    f"{_num(h)} ({len(e.head_starts)}) | {_ci(e)} | "
                    f"{'–' if cv is None else format(cv, '.2f') + '%'}{' (calibrating)' if e.calibrating else ''}"
                    f" | {ICON.get(v, '')} {v}{gate} |")
    return rows


def page_section(st: StartsRecord) -> str:
    """The page's section on server starts and the A/B."""
    entries = st.ab
    lines = ["", "## Server starts" + (" and A/B" if entries else ""), ""]
    if st.between_start:
        lines.append(f"One start (server started elsewhere): the between-start term is taken {st.between_start}.")
    if st.restarts:
        lines.append(f"Each server config was started {st.restarts} time(s); order: {' '.join(st.order)}.")
    dist = [p for p in st.preflight if p.disturbed]
    if dist:
        lines.append("Busy before a start (pre-flight): " + "; ".join(
            f"{p.server} start {p.start}: {p.disturbed}" for p in dist) + ".")
    wins = [w for w in st.windows if w.disturbed]
    if wins:
        lines.append("Disturbed while measuring (left out, replaced while spares allowed): " + "; ".join(
            f"{w.server} start {w.start} {w.case}: {w.disturbed}" for w in wins) + ".")
    if entries:
        lines += ["", "Head = base + " + ", ".join(f"`{o}`" for o in entries[0].overrides) + "; "
                  f"{starts_used(entries)} start(s) per arm used.", ""]
        lines += _table(entries)
        evidence = [(e, evidence_lines(e, entries)) for e in entries]
        notes = [f"- {e.server} {e.case}/{e.metric}: " + "; ".join(words) for e, words in evidence if words]
        if notes:
            lines += [""] + notes
    return "\n".join(lines) + "\n"


def pr_comment(st: StartsRecord | None, hardware: str | None) -> str:
    """A PR comment: the verdict first, then the table, then how it was measured."""
    st = st or StartsRecord()
    entries = st.ab
    verdicts = [e.verdict or "error" for e in entries if e.gate == "fail"]
    if not entries:
        head = "⚠️ **pytest-mxfp4**: no A/B result (was `--perf-ab-head` given and did both arms start?)"
    elif "error" in verdicts:
        head = "💥 **pytest-mxfp4 A/B: error** — an arm did not measure; see the table (the other arm is kept)"
    elif "regressed" in verdicts:
        head = "❌ **pytest-mxfp4 A/B: regression** — the head arm is slower beyond the noise of server starts"
    elif "inconclusive" in verdicts:
        head = ("❔ **pytest-mxfp4 A/B: inconclusive** — the starts could not rule out a drop beyond the "
                "threshold; not a failure (see what would decide it below)")
    else:
        head = "✅ **pytest-mxfp4 A/B: no regression** in the fail-gated metrics"
    lines = [head, ""]
    if entries:
        lines += _table(entries)
        lines.append("")
        notes = [f"- {e.server} {e.case}/{e.metric}: " + "; ".join(evidence_lines(e, entries))
                 for e in entries if e.gate == "fail" and evidence_lines(e, entries)]
        if notes:
            lines += notes + [""]
        lines.append(f"Base and head ran on the same machine ({hardware or 'unknown hardware'}) in one session, "
                     f"{starts_used(entries)} server start(s) per arm in ABBA order (planned {st.restarts}, "
                     f"up to {st.max_restarts} while inconclusive); each start's mean is one unit of "
                     "evidence. Δ is head vs base; the interval is the confidence interval the one-sided 1% test "
                     "uses; a pass must rule out a drop beyond the threshold. "
                     "A stored baseline, where one exists, is a warn-only second opinion.")
        wins = [w for w in st.windows if w.disturbed]
        if wins:
            lines.append("")
            lines.append("Disturbed while measuring (left out of the verdict; a spare start replaced it where "
                         "the budget allowed): " + "; ".join(
                             f"{w.server} start {w.start} {w.case} ({w.disturbed})" for w in wins) + ".")
        seconds = [e for e in entries if e.baseline_second_opinion]
        if seconds:
            lines.append("")
            lines.append("<details><summary>Stored baseline (second opinion)</summary>\n")
            for e in seconds:
                so = e.baseline_second_opinion
                lines.append(f"- {e.server} {e.case}/{e.metric}: {so.verdict}"
                             + (f" ({so.delta_pct:+.1f}%)" if so.delta_pct is not None else ""))
            lines.append("\n</details>")
    return "\n".join(lines) + "\n"


def mark_interrupted(comment: str, why: str) -> str:
    """An interrupted run's PR comment: its headline verdict (a look the run
    may not have completed) is replaced by the interruption; the table keeps
    only what the completed looks decided."""
    body = comment.split("\n", 1)[1] if "\n" in comment else ""
    return (f"⏹️ **pytest-mxfp4 A/B: interrupted** — {why}. The run was cut short: no verdict, not a pass; "
            "run it again.\n" + body)
