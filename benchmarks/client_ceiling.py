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

Results: benchmarks/results/client_ceiling.txt
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default=None, help="tok/s, comma-separated")
    ap.add_argument("--tg", default="128,1024")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
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
