"""GPU telemetry logic through the NVML seam (FAKE NVML; the real one is
verified on a lent H100/H200 with scripts/nvml_probe.py)."""

import time

from pytest_mxfp4.observe.telemetry import GpuSampler, decode_reasons, load_nvml, summarize

from .fakes.fake_nvml import FakeNvml


def test_window_summarizes_clocks_power_and_flags_throttling():
    nvml = FakeNvml(reasons=[0x0, 0x0, 0x4, 0x0])  # one power-capped reading
    sampler = GpuSampler(nvml, interval_s=0.01)
    with sampler.window() as w:
        time.sleep(0.08)
    (g,) = w.summary
    assert g.readings >= 3 and g.sm_clock_mhz_mean == 1980 and g.sm_clock_mhz_max_possible == 1980
    assert g.power_w_mean == 350.0 and g.temp_c_max == 61 and g.util_pct_mean == 97
    assert g.throttled and "sw_power_cap" in g.reasons and w.throttled


def test_idle_is_not_throttling():
    w = GpuSampler(FakeNvml(reasons=[0x1]), interval_s=0.01).window()
    with w:
        time.sleep(0.03)
    assert not w.throttled and w.summary[0].reasons == ["gpu_idle"]


def test_unsupported_fields_degrade_per_field():
    # GB10's unified memory answers "not supported" for some fields
    nvml = FakeNvml(unsupported={"power", "util", "max_clock"})
    w = GpuSampler(nvml, interval_s=0.01).window()
    with w:
        time.sleep(0.02)
    g = w.summary[0]
    assert g.power_w_mean is None and g.util_pct_mean is None and g.sm_clock_mhz_max_possible is None
    assert g.sm_clock_mhz_mean == 1980 and g.temp_c_max == 61


def test_several_gpus_are_summarized_apart():
    w = GpuSampler(FakeNvml(gpus=2), interval_s=0.01).window()
    with w:
        time.sleep(0.02)
    assert [g.gpu for g in w.summary] == [0, 1]


def test_reason_decoding():
    assert decode_reasons(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert decode_reasons(0x8000)[-1] == "unknown_0x8000"
    assert summarize([]) == []


def test_cpu_only_machine_gets_a_note_not_an_error():
    nvml, note = load_nvml()
    if nvml is None:
        assert note.startswith("no GPU telemetry")
