"""`pytest-mxfp4 merge RESULT.json...`: combine the shards of one sharded run
(`--perf-shard K/N`) into one result JSON and one results page, and report
every shard that is missing, duplicated or does not belong (another matrix,
another split, other hardware).

    pytest-mxfp4 merge shard-1.json shard-2.json --json merged.json [--report PAGE.md
                       --baselines baselines/ --config MATRIX] [--expect-shards N]

Reads and writes through `results` (the one home of the result format).
Exit 0: complete and no fail-gated metric failed; 1: a fail-gated metric
failed, a shard problem (each printed on its own line), or nothing was
judged (no fail-gated metric measured: every config skipped or errored; the
same rule as a session: a run that measured nothing is not a pass); 2: bad
input.
The merged results are written even when a shard is missing, so the shards
that did run are never lost. No pytest, no network.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.results import SessionResults


@dataclass
class Merged:
    session: SessionResults
    problems: list[str] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)  # one per input: index, runner, host, servers, file

    @property
    def complete(self) -> bool:
        return not self.problems


def merge(paths: list[str | Path], expect_shards: int | None = None) -> Merged:
    if not paths:
        raise PerfUserError("merge: no result files given")
    loaded = [(str(p), results_file.load(p)) for p in paths]
    problems: list[str] = []
    shards: list[dict] = []
    for path, s in loaded:
        sh = s.environment.get("shard")
        if s.interrupted:
            problems.append(f"{path}: interrupted ({s.interrupted}); its configs' verdicts are incomplete")
        if not isinstance(sh, dict):
            problems.append(f"{path}: not a shard (no environment.shard; run with --perf-shard K/N)")
            sh = {}
        shards.append({"file": path, "index": sh.get("index"), "count": sh.get("count"),
                       "runner": sh.get("runner"), "host": s.environment.get("hostname"),
                       "servers": sorted(s.servers), "matrix_servers": sh.get("matrix_servers"),
                       "plan": sh.get("plan"), "hardware": s.hardware_key, "matrix": s.matrix})
    first = shards[0]

    # one run: same split, same matrix, same hardware
    counts = sorted({sh["count"] for sh in shards if sh["count"] is not None})
    if len(counts) > 1:
        problems.append("mismatched split: shard counts " + ", ".join(
            f"{sh['file']} {sh['index']}/{sh['count']}" for sh in shards))
    n = expect_shards or (counts[0] if counts else len(shards))
    if expect_shards and counts and counts != [expect_shards]:
        problems.append(f"expected {expect_shards} shards, the files say {'/'.join(map(str, counts))}")
    for sh in shards[1:]:
        if sh["matrix"] != first["matrix"] or sh["matrix_servers"] != first["matrix_servers"]:
            problems.append(f"mismatched matrix: {sh['file']} ran matrix {sh['matrix']!r} with configs "
                            f"{sh['matrix_servers']}, {first['file']} ran {first['matrix']!r} with {first['matrix_servers']}")
        elif sh["plan"] != first["plan"]:
            problems.append(f"mismatched split: {sh['file']} and {first['file']} split the matrix differently "
                            f"(different shard costs?): {sh['plan']} vs {first['plan']}")
        if sh["hardware"] != first["hardware"]:
            problems.append(f"mismatched hardware: {sh['file']} ran on {sh['hardware']}, "
                            f"{first['file']} on {first['hardware']}")

    by_index: dict[int, list[str]] = {}
    for sh in shards:
        if sh["index"] is not None:
            by_index.setdefault(sh["index"], []).append(sh["file"])
    for k, files in sorted(by_index.items()):
        if len(files) > 1:
            problems.append(f"duplicate shard {k}/{n}: {', '.join(files)}")
    plan = first["plan"] or []
    for k in range(1, n + 1):
        if k not in by_index:
            lost = plan[k - 1] if k - 1 < len(plan) else []
            problems.append(f"missing shard {k}/{n}" + (f": configs {', '.join(lost)} not measured" if lost else ""))
    owner: dict[str, str] = {}
    for sh in shards:
        for name in sh["servers"]:
            if name in owner and owner[name] != sh["file"]:
                problems.append(f"duplicate config {name!r}: in {owner[name]} and {sh['file']}")
            owner.setdefault(name, sh["file"])

    env = {k: v for k, v in loaded[0][1].environment.items() if k != "shard"}
    env["shards"] = [{k: sh[k] for k in ("index", "count", "runner", "host", "servers", "file")} for sh in shards]
    cut = [f"{path}: {s.interrupted}" for path, s in loaded if s.interrupted]
    merged = SessionResults(matrix=first["matrix"], environment=env, interrupted="; ".join(cut) or None)
    seen: set[str] = set()
    for (path, s), sh in zip(loaded, shards):
        for name, rec in s.servers.items():
            if name in seen:
                continue  # a duplicate: reported above, the first file's numbers are kept
            seen.add(name)
            rec.info = {**rec.info, "shard": f"{sh['index']}/{sh['count']}", "runner": sh["runner"]}
            merged.servers[name] = rec
            merged.metrics += s.for_server(name)
            merged.case_runs += [r for r in s.case_runs if getattr(r, "server", None) == name]
    nothing = nothing_judged(merged)
    if nothing:
        problems.append(nothing)
    return Merged(session=merged, problems=problems, shards=shards)


NOTHING_JUDGED = "nothing was judged"


def nothing_judged(s: SessionResults) -> str | None:
    """Why the merged run judged nothing (no fail-gated metric has samples
    without an error), or None. The session's rule (`gate_problems`), for
    the whole sharded run: every shard skipping its configs (a runner that
    lost its GPU) or failing must not read as a passed night."""
    gated = [m for m in s.metrics if m.gate == "fail"]
    if any(m.samples and not m.error for m in gated):
        return None
    recs = list(s.servers.values())
    skipped = [r for r in recs if r.skipped]
    failed = [r for r in recs if r.error]
    why = []
    if skipped:
        why.append(f"{len(skipped)} config(s) skipped ({skipped[0].name}: {skipped[0].skipped})")
    if failed:
        why.append(f"{len(failed)} failed ({failed[0].name}: {failed[0].error})")
    if gated:
        why.append(f"every fail-gated metric errored ({gated[0].server} {gated[0].key}: "
                   f"{gated[0].error or 'no samples'})")
    elif recs and not skipped and not failed:
        why.append("no fail-gated metric in the results")
    return f"{NOTHING_JUDGED}: no fail-gated metric was measured ({'; '.join(why) or 'no config ran'})"


def shards_section(m: Merged) -> str:
    lines = ["", "## Shards", "",
             "Each config runs on the same shard, and shard K on runner `gb10-shard-K`, every night "
             "(`--perf-shard`); numbers of one config are only compared with that box's.", "",
             "| shard | runner | host | configs | file |", "|---|---|---|---|---|"]
    for sh in sorted(m.shards, key=lambda s: (s["index"] or 0, s["file"])):
        lines.append(f"| {sh['index']}/{sh['count']} | {sh['runner'] or '?'} | {sh['host'] or '?'} "
                     f"| {', '.join(sh['servers']) or '(none)'} | {Path(sh['file']).name} |")
    if m.problems:
        lines += ["", "**Incomplete run:**", ""] + [f"- {p}" for p in m.problems]
    return "\n".join(lines) + "\n"


def _refuse_overwriting_inputs(paths: list[str], outputs: dict[str, str | None]) -> None:
    """An output that is one of the input shards would overwrite it: refuse
    before anything is read or written."""
    inputs = {Path(p).resolve(): p for p in paths}
    for flag, out in outputs.items():
        if out and Path(out).resolve() in inputs:
            raise PerfUserError(f"{flag} {out}: is one of the input shards ({inputs[Path(out).resolve()]}); "
                                "merging would overwrite it. Write the merged result to another file")


def merge_command(paths: list[str], out_json: str, report: str | None, baselines: str, config: str | None,
                  expect_shards: int | None, plots: str | None = None) -> int:
    _refuse_overwriting_inputs(paths, {"--json": out_json, "--report": report})
    m = merge(paths, expect_shards)
    results_file.save(m.session, out_json)
    print(f"merged {len(paths)} shard file(s), {len(m.session.servers)} config(s): {out_json}")
    if report:
        from pytest_mxfp4.cli.report import report_command

        report_command([out_json], baselines, config, report, plots)
        with open(report, "a") as f:
            f.write(shards_section(m))
    for p in m.problems:
        print(f"pytest-mxfp4 merge: {p}", file=sys.stderr)
    failed = m.session.failed
    if failed:
        print(f"FAILED: {len(failed)} gated metric(s): " + ", ".join(f"{r.server} {r.key} {r.verdict.value}"
                                                                    for r in failed))
    return 1 if (m.problems or failed) else 0


def add_parser(sub) -> None:
    mp = sub.add_parser("merge", help="combine the shard result files of one run into one JSON and page")
    mp.add_argument("results", nargs="+", help="result JSON files written with --perf-shard K/N")
    mp.add_argument("--json", required=True, dest="out_json", help="merged result JSON to write")
    mp.add_argument("--report", help="results page to write (Markdown)")
    mp.add_argument("--baselines", default="baselines", help="baseline directory for the page (default: baselines)")
    mp.add_argument("--config", help="matrix file for the page")
    mp.add_argument("--expect-shards", type=int, help="how many shards the run had (a missing last shard is caught)")
    mp.add_argument("--plots", help="directory for trend plots from the baseline history (with --report)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pytest-mxfp4")
    add_parser(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(["merge", *(argv if argv is not None else sys.argv[1:])])
    try:
        return merge_command(args.results, args.out_json, args.report, args.baselines, args.config, args.expect_shards,
                             args.plots)
    except PerfUserError as e:
        print(f"pytest-mxfp4 merge: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
