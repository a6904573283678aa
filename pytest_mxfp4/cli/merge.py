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
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.results import SessionResults, ShardEntry, ShardInfo


@dataclass
class Merged:
    session: SessionResults  # its `shards` and `incomplete` say how it was put together

    @property
    def problems(self) -> list[str]:
        return self.session.incomplete

    @property
    def complete(self) -> bool:
        return not self.problems


@dataclass
class _Shard:
    """One input file as merge sees it."""

    file: str
    session: SessionResults
    info: ShardInfo

    def entry(self) -> ShardEntry:
        return ShardEntry(index=self.info.index, count=self.info.count, runner=self.info.runner,
                          host=self.session.environment.hostname, servers=sorted(self.session.servers),
                          file=self.file)


def merge(paths: list[str | Path], expect_shards: int | None = None) -> Merged:
    if not paths:
        raise PerfUserError("merge: no result files given")
    problems: list[str] = []
    shards: list[_Shard] = []
    for path in map(str, paths):
        s = results_file.load(path)
        if s.interrupted:
            problems.append(f"{path}: interrupted ({s.interrupted}); its configs' verdicts are incomplete")
        if s.shard is None:
            problems.append(f"{path}: not a shard (no environment.shard; run with --perf-shard K/N)")
        shards.append(_Shard(path, s, s.shard or ShardInfo(index=None, count=None)))
    first = shards[0]

    # one run: same split, same matrix, same hardware
    counts = sorted({sh.info.count for sh in shards if sh.info.count is not None})
    if len(counts) > 1:
        problems.append("mismatched split: shard counts " + ", ".join(
            f"{sh.file} {sh.info.index}/{sh.info.count}" for sh in shards))
    n = expect_shards or (counts[0] if counts else len(shards))
    if expect_shards and counts and counts != [expect_shards]:
        problems.append(f"expected {expect_shards} shards, the files say {'/'.join(map(str, counts))}")
    for sh in shards[1:]:
        if sh.session.matrix != first.session.matrix or sh.info.matrix_servers != first.info.matrix_servers:
            problems.append(f"mismatched matrix: {sh.file} ran matrix {sh.session.matrix!r} with configs "
                            f"{sh.info.matrix_servers}, {first.file} ran {first.session.matrix!r} with "
                            f"{first.info.matrix_servers}")
        elif sh.info.plan != first.info.plan:
            problems.append(f"mismatched split: {sh.file} and {first.file} split the matrix differently "
                            f"(different shard costs?): {sh.info.plan} vs {first.info.plan}")
        if sh.session.hardware_key != first.session.hardware_key:
            problems.append(f"mismatched hardware: {sh.file} ran on {sh.session.hardware_key}, "
                            f"{first.file} on {first.session.hardware_key}")

    by_index: dict[int, list[str]] = {}
    for sh in shards:
        if sh.info.index is not None:
            by_index.setdefault(sh.info.index, []).append(sh.file)
    for k, files in sorted(by_index.items()):
        if len(files) > 1:
            problems.append(f"duplicate shard {k}/{n}: {', '.join(files)}")
    plan = first.info.plan
    for k in range(1, n + 1):
        if k not in by_index:
            lost = plan[k - 1] if k - 1 < len(plan) else []
            problems.append(f"missing shard {k}/{n}" + (f": configs {', '.join(lost)} not measured" if lost else ""))
    owner: dict[str, str] = {}
    for sh in shards:
        for name in sorted(sh.session.servers):
            if name in owner and owner[name] != sh.file:
                problems.append(f"duplicate config {name!r}: in {owner[name]} and {sh.file}")
            owner.setdefault(name, sh.file)

    cut = [f"{sh.file}: {sh.session.interrupted}" for sh in shards if sh.session.interrupted]
    merged = SessionResults(matrix=first.session.matrix, environment=replace(first.session.environment),
                            interrupted="; ".join(cut) or None, shards=[sh.entry() for sh in shards])
    seen: set[str] = set()
    for sh in shards:
        for name, rec in sh.session.servers.items():
            if name in seen:
                continue  # a duplicate: reported above, the first file's numbers are kept
            seen.add(name)
            rec.shard, rec.shard_runner = f"{sh.info.index}/{sh.info.count}", sh.info.runner
            merged.servers[name] = rec
            merged.metrics += sh.session.for_server(name)
            merged.case_runs += [r for r in sh.session.case_runs if r.server == name]
    nothing = nothing_judged(merged)
    if nothing:
        problems.append(nothing)
    merged.incomplete = problems
    return Merged(session=merged)


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

        report_command([out_json], baselines, config, report, plots)  # the page shows the shards
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
