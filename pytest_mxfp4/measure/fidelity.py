"""Does the client's decode speed agree with the server's own clock?

llama.cpp's llama-server ends each stream with its own `timings`
(`predicted_per_second`: generated tokens over its generation time). The
client's tg t/s is `(n - 1) / (t_last - t_first)` on the SSE lines it read.
On a healthy box the two agree closely (H200, 680 samples: client / server
1.001-1.007, shared/reference/gpu-llamacpp-h200.md); when they drift apart,
the client's numbers describe the client or the transport (a starved client,
buffering, a proxy), not the engine. Pure functions on plain values.
"""

from __future__ import annotations

# |client tg / server tg - 1| beyond this flags the sample. Measured: 1.001-1.009
# on the 2-core CPU box (llama.cpp tiny dense and MXFP4 MoE, tg32/tg128) and
# 1.001-1.007 on an H200; the server counts n tokens where the client counts
# n - 1 intervals, which is within that. 10% is ten times the worst seen and
# still catches a client whose stream was delayed or bunched (burst delivery
# reads as +50% or more).
SERVER_RATIO_BOUND = 0.10
FLAG_SERVER_DISAGREES = "server-timing-disagrees"


def server_decode_tps(timings: dict | None) -> float | None:
    """The server's own decode t/s from llama.cpp `timings` (None if absent)."""
    if not isinstance(timings, dict):
        return None
    v = timings.get("predicted_per_second")
    if isinstance(v, (int, float)) and v > 0:
        return float(v)
    n, ms = timings.get("predicted_n"), timings.get("predicted_ms")
    if isinstance(n, (int, float)) and isinstance(ms, (int, float)) and n > 1 and ms > 0:
        return n * 1000.0 / ms
    return None


def decode_ratio(client_tg_tps: float | None, timings: dict | None) -> float | None:
    """client tg t/s / server tg t/s, or None where either is missing."""
    server = server_decode_tps(timings)
    if client_tg_tps is None or server is None:
        return None
    return client_tg_tps / server


def disagrees(ratio: float | None, bound: float = SERVER_RATIO_BOUND) -> bool:
    return ratio is not None and abs(ratio - 1.0) > bound


def keep_timings(timings: dict | None) -> dict | None:
    """The numeric fields of the server's `timings`, rounded, for the results JSON."""
    if not isinstance(timings, dict):
        return None
    out = {k: (round(v, 4) if isinstance(v, float) else v)
           for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out or None
