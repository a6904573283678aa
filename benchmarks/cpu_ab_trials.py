"""A/B trials on the real CPU engine with a neighbour burst planted during one start.

Each trial is one real `pytest -m perf --perf-ab-head ...` run of the
llama.cpp tiny f16 row (configs/cpu.yaml's recipe, tg32, R=3 up to 8 starts
per arm): an A/A (head = the same server, a harmless env var) or a planted
slowdown (head = `wrap=scripts/with_neighbour.py --duty D`, a steady share of
the engine's own core taken away; its true size comes from llama-server's
own decode timings per start). In every trial a *neighbour burst* (a process
of nobody's, spinning on the engine's core) runs for the whole of one start
(the start after the first); the gate should report that start disturbed,
leave it out and replace it.

What is checked per trial, from the run's own JSON:
  verdict of tg32 (A/B), its interval, the threshold a pass must rule out,
  starts per arm used, which starts were left out as disturbed and whether
  the burst's start is among them, the truth (server timings, head vs base).

    python benchmarks/cpu_ab_trials.py --aa 10 --slow 10 [--duty 0.2]

Results: benchmarks/results/cpu_ab_trials.txt (and .jsonl, one line a trial).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = """\
name: cpu-ab-trials
servers:
  llamacpp-tiny:
    engine: llama.cpp
    runner: process
    model: models/gguf/tiny-f16.gguf
    served_model_name: tiny
    cpu_cores: 1
    health_path: /health
    startup_timeout_s: 120
    command: [.venv/bin/llama-server, -m, "{model}", -a, "{served_model_name}", --host, "{host}",
              --port, "{port}", -c, "2048", -np, "1", -t, "1", --cache-ram, "0", --no-webui]
workloads:
  decode: {tg: [32], pp: 512}
  runs: 5
  warmup: 1
  restarts: 3
  max_restarts: 8
gates:
  tg32: fail
"""


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def server_pids(ancestor: int) -> list[int]:
    """llama-server processes below `ancestor` (this trial's pytest), in pid order."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not (cmd and cmd[0].endswith(b"llama-server")):
            continue
        pid, hops = int(name), 0
        while pid and pid != ancestor and hops < 8:
            pid, hops = _ppid(pid) or 0, hops + 1
        if pid == ancestor:
            out.append(int(name))
    return sorted(out)


def burst_during_start(k: int, stop: threading.Event, log: list, ancestor: int) -> None:
    """Spin a neighbour on the engine's core for the whole of the k-th server
    start (0-based) this run makes; the burst is nobody's child but ours."""
    seen: list[int] = []
    while not stop.is_set():
        for pid in server_pids(ancestor):
            if pid not in seen:
                seen.append(pid)
        if len(seen) > k and seen[k] in server_pids(ancestor):
            pid = seen[k]
            try:
                cores = os.sched_getaffinity(pid)
            except OSError:
                cores = {0}
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                       preexec_fn=lambda: os.sched_setaffinity(0, cores))
            log.append({"burst_server_pid": pid, "cores": sorted(cores), "t": time.time()})
            while not stop.is_set() and pid in server_pids(ancestor):
                time.sleep(0.05)
            spinner.kill()
            spinner.wait()
            return
        time.sleep(0.05)


def truth(data: dict) -> float | None:
    """Head vs base from llama-server's own decode timings (mean of start means)."""
    per: dict[tuple[str, int], list[float]] = {}
    for run in data.get("runs", []):
        if run.get("workload") != "tg32":
            continue
        for s in run.get("samples", []):
            t = (s.get("server_timings") or {}).get("predicted_per_second")
            if t:
                per.setdefault((run["server"], s.get("start", 0)), []).append(t)
    arms: dict[str, list[float]] = {}
    for (server, _), xs in per.items():
        arms.setdefault("head" if server.endswith("@head") else "base", []).append(sum(xs) / len(xs))
    if not arms.get("base") or not arms.get("head"):
        return None
    b = sum(arms["base"]) / len(arms["base"])
    h = sum(arms["head"]) / len(arms["head"])
    return 100.0 * (h / b - 1.0)


def trial(kind: str, duty: float, burst_start: int, work: Path) -> dict:
    head = "env.PYTEST_MXFP4_ARM=head" if kind == "aa" else f"wrap=scripts/with_neighbour.py --duty {duty}"
    out = work / "r.json"
    cmd = [sys.executable, "-m", "pytest", "-m", "perf", "-p", "no:cacheprovider", "-q", "tests/perf",
           f"--perf-config={work / 'matrix.yaml'}", f"--perf-ab-head={head}", f"--perf-json={out}",
           f"--perf-output={work / 'out'}", f"--perf-baselines={work / 'bl'}", f"--perf-pr-comment={work / 'pr.md'}"]
    stop = threading.Event()
    log: list = []
    t0 = time.monotonic()
    with open(work / "pytest.log", "w+") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        th = threading.Thread(target=burst_during_start, args=(burst_start, stop, log, proc.pid), daemon=True)
        th.start()
        proc.wait()
        stop.set()
        th.join(5)
        logf.seek(0)
        text = logf.read()

    class p:  # noqa: N801 - the run's outcome, like subprocess.run's
        returncode = proc.returncode
        stdout = text
        stderr = ""
    rec = {"kind": kind, "duty": duty if kind == "slow" else 0.0, "rc": p.returncode,
           "wall_s": round(time.monotonic() - t0, 1), "burst": log}
    if not out.exists():
        rec["error"] = p.stdout[-2000:] + p.stderr[-2000:]
        return rec
    data = json.loads(out.read_text())
    st = data["environment"].get("starts") or {}
    (e,) = [x for x in st.get("ab", []) if x["metric"] == "tg_tps"] or [{}]
    burst_pid = log[0]["burst_server_pid"] if log else None
    order = [o for o in st.get("order", [])]
    rec.update(verdict=e.get("verdict"), delta_pct=e.get("delta_pct"), ci=[e.get("ci_low_pct"), e.get("ci_high_pct")],
               worst_pct=e.get("worst_pct"), threshold_pct=e.get("threshold_pct"),
               starts=[len(e.get("base_starts", [])), len(e.get("head_starts", []))],
               measured_cv_pct=e.get("between_start_cv_pct"), noise=e.get("noise"),
               left_out=[f"{w['server']}#{w['start']}" for w in st.get("windows", []) if w.get("disturbed")],
               burst_slot=order[burst_start] if burst_start < len(order) else None, burst_pid=burst_pid,
               truth_pct=truth(data))
    rec["burst_left_out"] = rec["burst_slot"] in rec["left_out"] if rec["burst_slot"] else None
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aa", type=int, default=10)
    ap.add_argument("--slow", type=int, default=10)
    ap.add_argument("--duty", type=float, default=0.2)
    ap.add_argument("--burst-start", type=int, default=1, help="which server start of a run gets the burst (0-based)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_ab_trials")
    a = ap.parse_args()
    if not (ROOT / "models" / "gguf" / "tiny-f16.gguf").exists() or not (ROOT / ".venv" / "bin" / "llama-server").exists():
        sys.exit("cpu_ab_trials: needs .venv/bin/llama-server and models/gguf/tiny-f16.gguf (scripts/setup.sh)")
    recs = []
    kinds = ["aa"] * a.aa + ["slow"] * a.slow
    jsonl = a.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "w") as f:
        for i, kind in enumerate(kinds):
            with tempfile.TemporaryDirectory(prefix="cpu-ab-trial-") as d:
                work = Path(d)
                (work / "matrix.yaml").write_text(MATRIX.replace("models/", str(ROOT / "models") + "/")
                                                  .replace(".venv/bin/", str(ROOT / ".venv" / "bin") + "/"))
                rec = trial(kind, a.duty, a.burst_start, work)
            rec["trial"] = i
            recs.append(rec)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(f"{i:2d} {kind:4s} rc={rec['rc']} {rec.get('verdict')} Δ {fmt(rec.get('delta_pct'))} "
                  f"CI [{fmt(rec.get('ci', [None])[0])}, {fmt((rec.get('ci') or [None, None])[1])}] "
                  f"worst {fmt(rec.get('worst_pct'))} truth {fmt(rec.get('truth_pct'))} starts {rec.get('starts')} "
                  f"left out {rec.get('left_out')} burst {rec.get('burst_slot')} {rec.get('wall_s')} s", flush=True)
    lines = summary(recs, a)
    a.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def fmt(x) -> str:
    return "–" if x is None else f"{x:+.1f}%"


def summary(recs: list[dict], a) -> list[str]:
    aa = [r for r in recs if r["kind"] == "aa"]
    slow = [r for r in recs if r["kind"] == "slow"]
    thr = lambda r: r.get("threshold_pct") or 1.0  # noqa: E731
    unearned = [r for r in aa if r.get("verdict") == "pass" and (r.get("ci") or [0])[0] is not None
                and -r["ci"][0] > thr(r)]
    lines = [f"CPU engine A/B trials (llama.cpp tiny f16, tg32, R=3 up to 8 per arm; neighbour burst on the engine's "
             f"core during start {a.burst_start} of every run), {time.strftime('%Y-%m-%d')}",
             "",
             f"{'#':>2} {'kind':<5} {'verdict':<13} {'delta':>7} {'CI low':>7} {'CI high':>7} {'worst':>7} "
             f"{'truth':>7} {'starts':>7} {'burst left out':>14}  left out"]
    for r in recs:
        ci = r.get("ci") or [None, None]
        lines.append(f"{r['trial']:>2} {r['kind']:<5} {str(r.get('verdict')):<13} {fmt(r.get('delta_pct')):>7} "
                     f"{fmt(ci[0]):>7} {fmt(ci[1]):>7} {fmt(r.get('worst_pct')):>7} {fmt(r.get('truth_pct')):>7} "
                     f"{str(r.get('starts')):>7} {str(r.get('burst_left_out')):>14}  {', '.join(r.get('left_out') or [])}")
    lines += ["",
              f"A/A: {len(aa)} trials; regressed {sum(r.get('verdict') == 'regressed' for r in aa)}; "
              f"pass {sum(r.get('verdict') == 'pass' for r in aa)} (of which admitting a drop beyond the threshold: "
              f"{len(unearned)}); inconclusive {sum(r.get('verdict') == 'inconclusive' for r in aa)}",
              f"slowdown (wrap=with_neighbour --duty {a.duty}): {len(slow)} trials; regressed "
              f"{sum(r.get('verdict') == 'regressed' for r in slow)}; truth (server timings) "
              + ", ".join(fmt(r.get("truth_pct")) for r in slow),
              f"burst start left out: {sum(bool(r.get('burst_left_out')) for r in recs)} of {len(recs)} trials"]
    return lines


if __name__ == "__main__":
    sys.exit(main())
