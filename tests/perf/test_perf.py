"""The perf suite: one test per (server config x workload case) of the matrix.

Run with `pytest -m perf`; plain `pytest` deselects these and starts nothing.
"""

import pytest

pytestmark = pytest.mark.perf


def test_workload(perf_measure):
    results = perf_measure()
    assert results, "a measured case must produce at least its primary metric"
