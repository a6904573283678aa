"""How fast a stream can the client time faithfully?

A FAKE paced server (tests/fakes/paced_sse_server.py, its own process, pinned
to one core) sends token i at an exact time and keeps its own send stamps as
the truth; this process (the clients) is pinned to the other core. For each
rate and tgN, each client measures `runs` streams; the table prints tg t/s
over the truth (mean and the run furthest from 1), and how many of our
samples the checks flagged (client-behind / burst-delivery) with the worst
ratio among the samples they let through as clean.

Clients: ours (pytest_mxfp4.measure.client.EngineClient, default settings,
and with busy-polling off) and llama-benchy (its own LLMClient.run_generation
over aiohttp, its tg definition), if installed (`pip install llama-benchy`;
only for this comparison, not a dependency).

    .venv/bin/python benchmarks/client_ceiling.py   # ~5 min, nothing else running
    ... --quick     (3 runs, fewer rates; ~1 min)
    ... --concurrency 4   (N streams released together, as a tg32@c4 case runs them)

Results: benchmarks/results/client_ceiling.txt, client_ceiling_c4.txt

With --concurrency N the fake sends the N streams as one engine batch (token
i to every stream at t0 + i / rate; the rate is per stream, N x rate in all),
and the client is the plugin's concurrent round (measure/concurrent.py: N
threads, blocking reads stamped by the kernel). Each stream is judged against
its own send stamps; the aggregate column is the round's tokens / wall over
the same quantity from the fake's stamps.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pytest_mxfp4.measure.client import EngineClient, RequestSpec  # noqa: E402
from pytest_mxfp4.measure.lag import LagMonitor  # noqa: E402
from pytest_mxfp4.measure.metrics import (  # noqa: E402
    CLIENT_BEHIND_BOUND,
    burst_delivery,
    client_behind,
)
from tests.fakes.paced_sse_server import PacedServer  # noqa: E402

try:
    import aiohttp
    from llama_benchy.client import LLMClient
except ImportError:  # the comparison column is left out
    LLMClient = None


def ours(client: EngineClient, tg: int) -> tuple[float, str]:
    with LagMonitor():
        t = client.stream(RequestSpec("hello world", tg))
    tps = (t.completion_tokens - 1) / (t.last_content - t.first_content)
    behind = client_behind(t)
    flag = ""
    if behind is not None and behind > CLIENT_BEHIND_BOUND:
        flag = "client-behind"
    elif burst_delivery(t):
        flag = "burst-delivery"
    return tps, flag


class Benchy:
    """llama-benchy 0.4's own request path and tg definition."""

    def __init__(self, url: str):
        self.loop = asyncio.new_event_loop()
        self.client = LLMClient(url + "/v1", "EMPTY", "m", exact_tg=True)
        self.session = self.loop.run_until_complete(self._session())

    async def _session(self):
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600),
                                     connector=aiohttp.TCPConnector(limit=5, force_close=False,
                                                                    keepalive_timeout=600))

    def tg(self, tg: int) -> float:
        r = self.loop.run_until_complete(self.client.run_generation(self.session, "", "hello world", tg, False))
        ts = r.token_timestamps
        decode = sum(1 for x in ts if x > ts[0])  # its _count_tokens_after_first_timestamp
        return decode / (ts[-1] - ts[0]) if ts and ts[-1] > ts[0] else float("nan")  # all in one read: no tg

    def close(self):
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


def concurrent(a, rates: list[float], tgs: list[int], srv, client_cpu, server_cpu, pinned) -> int:
    """N streams per round; per stream measured tg / its truth; flags as the plugin sets them."""
    from pytest_mxfp4.measure.concurrent import aggregate, run_round
    from pytest_mxfp4.measure.metrics import compute_metrics

    n = a.concurrency
    client = EngineClient("paced-fake", srv.url, "m")
    load = os.getloadavg()
    print(f"# client_ceiling --concurrency {n}: paced FAKE server (one batch: token i to all {n} streams at once) "
          f"on cpu {server_cpu}, the client's {n} threads on cpu {client_cpu}{'' if pinned else ' (not pinned)'}; "
          f"{a.runs} rounds per cell")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {sys.version.split()[0]}, "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"{'case':>7} {'rate/stream':>11} {'all':>7} | {'per-stream mean':>15} {'worst':>6} {'flagged':>8} "
          f"{'clean mean':>10} {'clean worst':>11} | {'aggregate':>9} | {'release ms':>10} {'re':>3}")
    print("# ratio = measured / truth (the fake's send stamps); per stream: every stream of every round; "
          "flagged: client-behind / burst-delivery / client-lag (the plugin replaces the round); "
          "aggregate: measured tokens/wall over the truth's (first send of the round -> last token); "
          "release: the spread of the N send stamps (max over rounds)")
    failures = []
    for tg in tgs:
        for rate in rates:
            srv.pace(rate=rate, ttft_s=0.002, batch=n)
            ratios, flags, aggs, spreads = [], [], [], []
            rnd, unsure = -1, 0
            while len(aggs) < a.runs:
                rnd += 1
                specs = [RequestSpec(f"s{k}r{rnd} hello world", tg) for k in range(n)]
                with LagMonitor() as lag:
                    timings = run_round(client, specs, exact=False)
                truths = srv.truths()
                if not rnd:
                    continue  # a warm-up round
                bad = [t for t in timings if isinstance(t, BaseException)]
                if bad:
                    raise SystemExit(f"round {rnd}: {bad[0]}")
                tr = [truths.get(f"s{k}r{rnd}") for k in range(n)]
                if any(t is None for t in tr):
                    raise SystemExit(f"round {rnd}: the fake kept no truth for every stream: {sorted(truths)}")
                if max(t["unsure_s"] for t in tr) > 50e-6 and unsure < 3 * a.runs:
                    unsure += 1  # the fake was preempted around a send: no truth, measure again
                    continue
                for t, truth in zip(timings, tr):
                    m = compute_metrics(t, 0.0, 1, tg)
                    ratios.append(m.tg_tps / truth["tg_tps"])
                    behind = client_behind(t)
                    f = ("client-behind" if behind is not None and behind > CLIENT_BEHIND_BOUND else
                         "burst-delivery" if burst_delivery(t) else
                         "client-lag" if lag.max_lag_ms() > 50 else "")
                    flags.append(f)
                wall, tokens, agg = aggregate(timings)
                starts = [t.start for t in timings]
                # the truth's wall: the same first request sent, to the last token the fake sent, on the
                # fake's clock (perf_counter is one clock on one machine)
                true_wall = max(t["last"] for t in tr) - min(starts)
                aggs.append(agg / (tokens / true_wall))
                spreads.append((max(starts) - min(starts)) * 1000)
            clean = [r for r, f in zip(ratios, flags) if not f]
            nflag = sum(1 for f in flags if f)
            mc = statistics.fmean(clean) if clean else float("nan")
            wc = max(clean, key=lambda r: abs(r - 1)) if clean else float("nan")
            worst = max(ratios, key=lambda r: abs(r - 1))
            print(f"{'tg' + str(tg):>7} {rate / 1000:>10g}k {n * rate / 1000:>6g}k | {statistics.fmean(ratios):>15.4f} "
                  f"{worst:>6.3f} {nflag:>4}/{len(flags):<3} {mc:>10.4f} {wc:>11.4f} | {statistics.fmean(aggs):>9.4f} "
                  f"| {max(spreads):>10.2f} {unsure:>3}", flush=True)
            if any(abs(r - 1) > 0.01 for r in clean):
                failures.append(f"c{n} tg{tg} {rate:g}/stream: a clean stream more than 1% off the truth")
    client.close()
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default=None, help="tok/s, comma-separated")
    ap.add_argument("--tg", default="128,1024")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--concurrency", type=int, default=1, help="N streams released together (as tg32@cN)")
    a = ap.parse_args()
    if a.quick:
        a.runs = 3
    a.rates = a.rates or ("1000,20000,100000,200000" if a.quick else
                          "1000,2000,5000,10000,20000,30000,50000,100000,150000,200000,300000")
    rates = [float(x) for x in a.rates.split(",")]
    tgs = [int(x) for x in a.tg.split(",")]
    ncpu = len(os.sched_getaffinity(0))
    pinned = not a.no_pin and ncpu >= 2
    server_cpu, client_cpu = (sorted(os.sched_getaffinity(0))[:2]) if pinned else (None, None)
    with PacedServer(cpu=server_cpu) as srv:
        if pinned:
            os.sched_setaffinity(0, {client_cpu})
        if a.concurrency > 1:
            return concurrent(a, rates, tgs, srv, client_cpu, server_cpu, pinned)
        clients = {
            "ours": EngineClient("paced-fake", srv.url, "m"),
            "ours-blocking": EngineClient("paced-fake", srv.url, "m", busy_poll_s=0.0),
        }
        benchy = Benchy(srv.url) if LLMClient is not None else None
        print(f"# client_ceiling: paced FAKE server on cpu {server_cpu}, clients on cpu {client_cpu}"
              f"{'' if pinned else ' (not pinned)'}; {a.runs} runs per cell; ratio = measured tg / truth "
              f"(server send stamps); worst = the run furthest from 1")
        print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, python {sys.version.split()[0]}, "
              f"llama-benchy {'0.4 (installed)' if benchy else 'not installed: column left out'}")
        cols = ["ours", "ours-blocking"] + (["llama-benchy"] if benchy else [])
        head = f"{'case':>7} {'rate':>7} |"
        for c in cols:
            head += f" {c + ' mean':>18} {'worst':>6}"
            if c.startswith("ours"):
                head += f" {'flagged':>7} {'clean mean':>10} {'worst':>6}"
            head += " |"
        head += f" {'truth':>8} {'re':>3}"
        print(head)
        print("# flagged: client-behind or burst-delivery (ours only; llama-benchy has no such check; the plugin "
              "replaces flagged samples); clean mean/worst: over the unflagged runs; truth: the rate the fake "
              "really sent at (mean); "
              "re: runs measured again because the fake was preempted around its first/last send")
        failures = []
        for tg in tgs:
            for rate in rates:
                srv.pace(rate=rate, ttft_s=0.002)
                line = f"{'tg' + str(tg):>7} {rate / 1000:>6g}k |"
                achieved, unsure = [], 0
                for c in cols:
                    ratios, flags = [], []
                    run = -1
                    while len(ratios) < a.runs:
                        run += 1  # run 0 is a warm-up
                        if c == "llama-benchy":
                            tps, flag = benchy.tg(tg), ""
                        else:
                            tps, flag = ours(clients[c], tg)
                        truth = srv.truth()
                        if not run:
                            continue
                        if truth["unsure_s"] > 50e-6 and unsure < 3 * a.runs:
                            unsure += 1  # the fake was preempted around a send: no truth, measure again
                            continue
                        achieved.append(truth["tg_tps"])
                        ratios.append(tps / truth["tg_tps"])
                        flags.append(flag)
                    mean = statistics.fmean(ratios)
                    worst = max(ratios, key=lambda r: abs(r - 1))
                    line += f" {mean:>18.3f} {worst:>6.3f}"
                    if c.startswith("ours"):
                        clean = [r for r, f in zip(ratios, flags) if not f]
                        nflag = sum(1 for f in flags if f)
                        wc = max(clean, key=lambda r: abs(r - 1)) if clean else float("nan")
                        mc = statistics.fmean(clean) if clean else float("nan")
                        line += f" {nflag:>4}/{len(flags):<2} {mc:>10.3f} {wc:>6.3f}"
                        if any(r < 0.98 for r in clean):
                            failures.append(f"{c} tg{tg} {rate:g}: a sample below 0.98 of the truth passed as clean")
                    line += " |"
                line += f" {statistics.fmean(achieved) / 1000:>7.1f}k {unsure:>3}"
                print(line, flush=True)
        for c in clients.values():
            c.close()
        if benchy:
            benchy.close()
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
