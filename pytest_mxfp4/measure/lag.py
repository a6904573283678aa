"""Watch the client's own scheduling lag while it measures.

On a small box a busy engine can starve the client: a 100 ms sleeper was seen
delayed by 6 s, and token streams then arrive in bursts, so the timestamps say
more about our scheduling than about the engine. A thread sleeps in short
ticks and records how late it wakes; a sample whose window saw a large
oversleep is flagged rather than trusted.
"""

from __future__ import annotations

import threading
import time


class LagMonitor:
    def __init__(self, tick_s: float = 0.005):
        self.tick_s = tick_s
        self._max_lag = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LagMonitor":
        self._thread = threading.Thread(target=self._run, name="pytest-mxfp4-lag", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            time.sleep(self.tick_s)
            lag = time.perf_counter() - before - self.tick_s
            with self._lock:
                if lag > self._max_lag:
                    self._max_lag = lag

    def reset(self) -> None:
        with self._lock:
            self._max_lag = 0.0

    def max_lag_ms(self) -> float:
        """Worst oversleep since the last reset, in ms."""
        with self._lock:
            return self._max_lag * 1000.0
