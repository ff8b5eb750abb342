"""The live dashboard: monitoring records read from a Kafka topic, served as a page and a JSON endpoint.

    store = RecordStore()
    reader = TopicRecordReader(client_kwargs, "fraud-monitor", store)   # a daemon thread
    app = dashboard_app(store, training=stats.to_dict(), thresholds=Thresholds())
    aiohttp.web.run_app(app, host="127.0.0.1", port=8080)

GET /                   the page (beam_ml.monitoring.report.dashboard_html), polling:
GET /api/records?since=N  {"records": [...], "alerts": [...], "seen": M}: what arrived after the N-th
GET /healthz            200 "ok"
A record that is not JSON, or not a monitoring/alert record, is counted (`store.bad`), never raised.
"""
from __future__ import annotations

import collections
import json
import threading
from typing import Optional

from aiohttp import web

from beam_ml.monitoring.config import Thresholds
from beam_ml.monitoring.follow import TopicFollower
from beam_ml.monitoring.report import dashboard_html

__all__ = ["RecordStore", "TopicRecordReader", "dashboard_app"]


class RecordStore:
    """The last `limit` records (monitoring and alert), in arrival order, numbered from 0."""

    def __init__(self, limit: int = 5000):
        self._items: collections.deque = collections.deque(maxlen=limit)
        self._lock = threading.Lock()
        self.seen = 0
        self.bad = 0

    def add_raw(self, value: bytes) -> None:
        try:
            record = json.loads(value)
            ok = isinstance(record, dict) and record.get("type") in ("monitoring", "alert") and "window" in record
        except (ValueError, TypeError):
            ok = False
        if not ok:
            with self._lock:
                self.bad += 1
            return
        self.add(record)

    def add(self, record: dict) -> None:
        with self._lock:
            self._items.append((self.seen, record))
            self.seen += 1

    def since(self, n: int) -> tuple[list, int]:
        with self._lock:
            return [r for i, r in self._items if i >= n], self.seen


class TopicRecordReader(TopicFollower):
    """Reads a topic's records from its start into a RecordStore, on a daemon thread (manual assignment)."""

    def __init__(self, client_kwargs: dict, topic: str, store: RecordStore):
        super().__init__(client_kwargs, topic, store.add_raw, name="dashboard")


def dashboard_app(store: RecordStore, training: Optional[dict] = None, thresholds: Optional[Thresholds] = None,
                  title: str = "beam_ml monitor") -> web.Application:
    thresholds = thresholds or Thresholds()

    def split(items):
        return ([r for r in items if r["type"] == "monitoring"], [r for r in items if r["type"] == "alert"])

    async def page(_request):
        # The records come with the page's first poll.
        payload = {"title": title, "training": training or {}, "records": [], "alerts": [],
                   "thresholds": thresholds.to_dict(), "seen": 0}
        return web.Response(text=dashboard_html(payload, poll_url="api/records"), content_type="text/html")

    async def api(request):
        try:
            n = max(int(request.query.get("since", "0")), 0)
        except ValueError:
            return web.json_response({"error": "since: expected an integer"}, status=400)
        items, seen = store.since(n)
        records, alerts = split(items)
        return web.json_response({"records": records, "alerts": alerts, "seen": seen, "bad": store.bad})

    async def health(_request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/records", api)
    app.router.add_get("/healthz", health)
    return app
