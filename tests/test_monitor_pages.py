"""The monitor's pages in real headless chromium: the static drift report and the live dashboard.

Both show data from real runs (stream_predict --monitor on a real broker; a CSV scored by the model);
the pages load without console errors and draw their charts (the DOM after the scripts ran is checked).
Set BEAM_ML_MONITOR_SCREENSHOT=<png> to keep the live dashboard's screenshot (docs/img/monitor_dashboard.png).
"""
from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import threading
import urllib.request

import matplotlib.image
import numpy as np
import pytest
from kafka import KafkaProducer

from beam_ml.monitoring.browser import chromium, dump_dom, screenshot
from beam_ml.monitoring.dashboard import RecordStore, TopicRecordReader, dashboard_app
from beam_ml.monitoring.stats import read_training_statistics
from beam_ml.model_store import resolve_version_dir
from beam_ml.testing import find_free_port
from pipelines import monitor
from tests.test_monitor_stream import stream_with_shift, trained_monitor_model

pytestmark = [pytest.mark.slow, pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")]


def _drawn(png: str) -> None:
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 1000 and image.std() > 0.05  # drawn, not blank


def _shifted_csv(src: str, dst: str, n: int = 4000) -> str:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        r = dict(rows[rng.integers(len(rows))])
        if i >= n // 2:
            r["average_montly_hours"] = str(float(r["average_montly_hours"]) * 3)
            if rng.random() < .6:
                r["sales"] = "robotics"
        out.append(r)
    out[5]["number_project"] = "twelve"  # a bad row: a dead letter, counted
    out[6]["satisfaction_level"] = ""  # missing
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(out)
    return dst


def test_static_drift_report_renders_in_chromium(tmp_path_factory, tmp_path):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    new = _shifted_csv(csv_path, str(tmp_path / "new.csv"))
    out, png = str(tmp_path / "drift.html"), str(tmp_path / "drift.png")
    lines = []
    assert monitor.run([f"--model_dir={model_root}", f"--input={new}", f"--output={out}", "--monitor_window=1000",
                        f"--screenshot={png}"], log=lines.append) == out  # raises on a console error
    _drawn(png)
    assert "3999 rows scored, 1 dead letters, 4 windows" in lines[0] and "average_montly_hours:js" in lines[0]
    dom = dump_dom(f"file://{out}")
    cells = re.findall(r'<rect[^>]*data-feature="([^"]+)"[^>]*data-value="([^"]*)"', dom)
    assert len(cells) == 4 * 10  # 9 features + the score, 4 windows
    shifted = [float(v) for f, v in cells if f == "average_montly_hours"]
    assert shifted[0] < .3 and shifted[-1] > .3
    assert dom.count('class="alert"') >= 1 and 'data-kind="live"' in dom


def _serve(app, port):
    """Runs the aiohttp app on 127.0.0.1:port in a thread; returns a stop function."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def main():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(30)

    def stop():
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return stop


@pytest.mark.integration
def test_live_dashboard_of_a_real_stream_renders_in_chromium(kafka_broker, new_topic, tmp_path_factory, tmp_path):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    records, alerts, _, topic = stream_with_shift(kafka_broker, new_topic, model_root, csv_path, "left", 500,
                                                  "average_montly_hours", "sales", tmp_path, labels_for=11000,
                                                  bad_events=[b"not json", b'{"event_id": "no features"}'])
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    producer.send(topic, value=b"junk that is not a record")  # counted by the dashboard, never raised
    producer.flush(10)
    producer.close()
    stats = read_training_statistics(resolve_version_dir(model_root))
    store = RecordStore()
    reader = TopicRecordReader({"bootstrap_servers": kafka_broker}, topic, store)
    port = find_free_port()
    stop = _serve(dashboard_app(store, training=stats.to_dict(), title=f"beam_ml monitor: {topic}"), port)
    try:
        for _ in range(100):
            if store.seen >= len(records) + len(alerts) and store.bad:
                break
            threading.Event().wait(0.2)
        url = f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(url + "api/records?since=0", timeout=10) as r:
            api = json.load(r)
        assert len(api["records"]) == len(records) and len(api["alerts"]) == len(alerts) and api["bad"] == 1
        png = str(tmp_path / "dashboard.png")
        shot = screenshot(url, png, height=1400)
        assert shot.returncode == 0 and shot.console_errors == [], shot.stderr
        _drawn(png)
        dom = dump_dom(url)
        cells = re.findall(r'<rect[^>]*data-feature="([^"]+)"', dom)
        assert len(cells) == len(records) * 10
        assert dom.count("<polyline") == 6  # throughput, latency p50/p99, precision/recall/ROC-AUC and 'data-kind="live"' in dom and 'data-kind="training"' in dom
        assert dom.count("<tr><td>20</td><td>") >= 2  # the alerts of the first shifted window, listed
        keep = os.environ.get("BEAM_ML_MONITOR_SCREENSHOT")
        if keep:
            shutil.copy(png, keep)
    finally:
        stop()
        reader.stop()
    # The command-line path: serves, waits for records, takes the picture, stops.
    cli_png = str(tmp_path / "cli.png")
    store = monitor.run([f"--monitor_topic={topic}", f"--bootstrap_servers={kafka_broker}",
                         f"--model_dir={model_root}", f"--port={find_free_port()}", f"--screenshot={cli_png}"],
                        log=lambda m: None)
    _drawn(cli_png)
    assert store.seen >= 1
