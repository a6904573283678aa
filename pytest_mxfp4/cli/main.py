"""`pytest-mxfp4` console script: offline tools that run nothing.

    pytest-mxfp4 observe LOGFILE [--engine vllm|llama.cpp]   what did that server really run?
    pytest-mxfp4 compare REFERENCE... CURRENT.json   the gate's decision on stored results
    pytest-mxfp4 report [RESULTS.json...] --config M --out PAGE.md   the results page from stored data
    pytest-mxfp4 merge SHARD.json... --json MERGED.json [--report PAGE.md]   one run from its shards
    pytest-mxfp4 trend HISTORY.jsonl [--append MERGED.json --ref R]   change points over the nightlies
    pytest-mxfp4 doctor [--config M]   this box, its engines (llama.cpp smoke-tested), which rows will run
"""

from __future__ import annotations

import argparse
import sys

from pytest_mxfp4.errors import PerfUserError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pytest-mxfp4", description="pytest-mxfp4 offline tools")
    sub = ap.add_subparsers(dest="command", required=True)
    ob = sub.add_parser("observe", help="print the observed runtime facts of a saved server log as JSON")
    ob.add_argument("logfile")
    ob.add_argument("--engine", default="vllm", choices=["vllm", "llama.cpp"])
    cp = sub.add_parser("compare", help="judge a result JSON against baselines or earlier results, offline")
    cp.add_argument("reference", nargs="+", help="baseline YAML file(s) or result JSON file(s)")
    cp.add_argument("current", help="result JSON written by --perf-json")
    cp.add_argument("--config", help="matrix file whose gates apply (default: tg32 fails, others warn)")
    rp = sub.add_parser("report", help="regenerate the Markdown results page (and plots) from stored results")
    rp.add_argument("results", nargs="*", help="result JSON file(s) written by --perf-json (optional)")
    rp.add_argument("--baselines", default="baselines", help="baseline directory (default: baselines)")
    rp.add_argument("--config", help="matrix file: adds pending rows, targets and workload parameters")
    rp.add_argument("--out", default="BENCHMARK_RESULTS.md", help="Markdown page to write")
    rp.add_argument("--plots", help="directory for trend plots (needs matplotlib)")
    rp.add_argument("--force", action="store_true", help="replace --out even if pytest-mxfp4 did not write it")
    dr = sub.add_parser("doctor", help="this box, the engines here (llama.cpp smoke-tested), and which rows of "
                                       "the matrix will run, be skipped or fail (a few seconds)")
    dr.add_argument("--config", help="matrix file (default: configs/cpu.yaml where it exists)")
    dr.add_argument("--no-smoke", action="store_true", help="do not start llama-server for its smoke test")
    from pytest_mxfp4.cli.merge import add_parser as add_merge

    add_merge(sub)
    tr = sub.add_parser("trend", help="change-point detection over the nightly history (Apache Otava)",
                        add_help=False)
    tr.add_argument("args", nargs=argparse.REMAINDER)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "trend":  # its own parser: python -m pytest_mxfp4.cli.trend --help
        from pytest_mxfp4.cli.trend import main as trend_main

        return trend_main(list(argv[1:]))
    args = ap.parse_args(argv)
    try:
        if args.command == "observe":
            from pytest_mxfp4.cli.observe import observe_command

            return observe_command(args.logfile, engine=args.engine)
        if args.command == "doctor":
            from pytest_mxfp4.cli.doctor import doctor_command

            return doctor_command(args.config, smoke=not args.no_smoke)
        if args.command == "compare":
            return _compare(args.reference, args.current, args.config)
        if args.command == "merge":
            from pytest_mxfp4.cli.merge import merge_command

            return merge_command(args.results, args.out_json, args.report, args.baselines, args.config,
                                 args.expect_shards, args.plots)
        if args.command == "report":
            from pytest_mxfp4.cli.report import report_command

            return report_command(args.results, args.baselines, args.config, args.out, args.plots, force=args.force)
    except PerfUserError as e:
        print(f"pytest-mxfp4 {args.command}: {e}", file=sys.stderr)
        return 2
    return 2


def _compare(reference: list[str], current: str, config: str | None) -> int:
    """Print the offline verdicts; exit 1 on a fail-gated regression."""
    from pytest_mxfp4.cli.compare import compare_results
    from pytest_mxfp4.report import terminal

    session = compare_results(reference, current, config)
    for line in terminal.render(session):
        print(line)
    failed = session.failed
    if failed:
        print(f"\nFAILED: {len(failed)} gated metric(s) regressed: " + ", ".join(f"{r.server} {r.key}" for r in failed))
        return 1
    if session.interrupted:  # the run being compared was cut short: not a pass
        from pytest_mxfp4.formats.results import interrupted_line

        print(f"\n{current}: {interrupted_line(session)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
