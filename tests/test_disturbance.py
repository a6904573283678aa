"""The measuring window's own check (pytest_mxfp4/measure/disturbance.py)."""

import os
import subprocess
import sys
import time

from pytest_mxfp4.measure.disturbance import Window, judge_window, other_cores


def test_the_rule_names_each_sign():
    clean = judge_window(other_cores_busy=0.05, flags_per_sample=[[], [], ["client-behind"]])
    assert not clean.disturbed and clean.facts["other_cores_busy"] == 0.05
    busy = judge_window(other_cores_busy=0.95, flags_per_sample=[[]] * 5)
    assert busy.disturbed and "other processes kept 0.95 cores busy" in busy.text()
    behind = judge_window(other_cores_busy=None, flags_per_sample=[["client-behind"]] * 12 + [[]] * 3)
    assert behind.text() == "12 of 15 samples flagged client-behind"
    gpu = judge_window(other_cores_busy=0.0, flags_per_sample=[], gpu_other_pids=[4242])
    assert "1 other compute process(es) on the GPU (pid 4242)" in gpu.text()


def test_other_cores_counts_everyone_but_ours():
    before = {1: 100.0, 2: 50.0, 3: 10.0}
    after = {1: 200.0, 2: 150.0, 3: 10.0, 4: 40.0}  # pid 4 started inside the window
    # 100 ticks of pid 2 + 40 of pid 4 over 2 s at 100 Hz = 0.7 cores; pid 1 is ours
    assert other_cores(before, after, ours={1}, seconds=2.0, hz=100.0) == 0.7


def test_a_real_spinner_is_ours_in_the_servers_group_and_a_neighbour_outside_it():
    from pytest_mxfp4.measure.disturbance import cpu_snapshot, own_pids

    # a spinning process in a session of its own, not our child (the shell that
    # started it is gone), alive across the window
    pid = int(subprocess.run(["sh", "-c", f"setsid {sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    try:
        time.sleep(0.3)
        t0, before = time.monotonic(), cpu_snapshot()
        time.sleep(1.0)
        after, seconds = cpu_snapshot(), time.monotonic() - t0
        as_server = other_cores(before, after, own_pids(server_pgids=(os.getpgid(pid),)), seconds)
        as_neighbour = other_cores(before, after, own_pids(), seconds)
    finally:
        os.kill(pid, 9)
    # the same snapshots: counted as the server's, the spinner is not "other"; outside it, it is
    # (whatever else the box does shows in both, so only the difference is asserted)
    assert as_neighbour - as_server > 0.6
    with Window() as w:
        time.sleep(0.2)
    assert w.other_cores is not None and w.other_cores >= 0
