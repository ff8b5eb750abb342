"""Small statistics shared by the benchmarks."""

from __future__ import annotations

from typing import Optional, Sequence


def nearest_rank(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0-100) of `values` by the nearest rank (None when there are none)."""
    if not len(values):
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))]
