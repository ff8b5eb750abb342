"""A generated card-transaction stream where fraud shows mainly as velocity (bursts on one card).

    rows = card_events(20_000, cards=500, seed=1)   # dicts: card_id, ts (epoch ms), Amount, V1, Class

Legitimate cards spend every few hours; a compromised card makes a burst of
quick transactions a few seconds to a minute apart (all but the first labelled
fraud). Amounts and V1 are drawn from the same distributions for both, slightly
shifted, so a model sees the fraud clearly only through counts per window.
"""
from __future__ import annotations

import csv
from typing import Optional

import numpy as np

__all__ = ["card_events", "write_card_csv", "CARD_FEATURES_SQL"]

CARD_FEATURES_SQL = ("SELECT card_id, COUNT(*) AS tx_10m, SUM(Amount) AS amount_10m, MAX(Amount) AS max_10m "
                     "FROM events WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY card_id")

_START_MS = 1_700_000_000_000


def card_events(n: int, cards: int = 500, seed: int = 0, burst_share: float = 0.08) -> list[dict]:
    """n events in event-time order (ties broken by card), as dicts."""
    rng = np.random.default_rng(seed)
    rows = []
    span_ms = max(1, n // max(cards, 1)) * 3 * 3_600_000  # ~ one legit transaction per card every 3 h
    n_burst_events = int(n * burst_share)
    n_legit = n - n_burst_events
    legit_cards = rng.integers(0, cards, n_legit)
    legit_ts = rng.integers(0, span_ms, n_legit)
    for c, t in zip(legit_cards, legit_ts):
        rows.append((int(t), int(c), 0))
    made = 0
    while made < n_burst_events:
        card, start = int(rng.integers(0, cards)), int(rng.integers(0, span_ms))
        size = int(min(rng.integers(3, 9), n_burst_events - made))
        t = start
        for i in range(size):
            rows.append((t, card, 1 if i else 0))
            t += int(rng.integers(5_000, 60_000))
        made += size
    rows.sort()
    out = []
    for t, card, fraud in rows:
        amount = float(np.round(rng.lognormal(3.0 + 0.15 * fraud, 1.0), 2))
        out.append({"card_id": f"c{card:05d}", "ts": _START_MS + t, "Amount": amount,
                    "V1": float(np.round(rng.normal(0.2 * fraud, 1.0), 4)), "Class": fraud})
    return out


def write_card_csv(path: str, rows: list[dict], columns: Optional[list[str]] = None) -> str:
    columns = columns or ["card_id", "ts", "Amount", "V1", "Class"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path
