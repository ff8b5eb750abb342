"""--monitor_table: monitoring and alert records as BigQuery rows (the BigQuery emulator on 127.0.0.1), and the
live dashboard reading them back (`python -m pipelines.monitor --monitor_table=...` over a real socket, chromium).

Fast tests (no servers): the row layout and the flags' one-line errors.
"""
from __future__ import annotations

import json
import math
import os
import re
import time

import numpy as np
import pytest

from beam_ml.errors import UserError
from beam_ml.io.bigquery import BigQueryEndpoint
from beam_ml.monitoring import SCORE_FEATURE
from beam_ml.monitoring.browser import chromium, dump_dom, screenshot
from beam_ml.monitoring.table import (MONITOR_TABLE_SCHEMA, TableRecordReader, TableRecordWriter, monitor_table,
                                      record_row)
from beam_ml.monitoring.window import clean_record
from beam_ml.options import MonitorOptions, parse_pipeline_options
from beam_ml.server.process import ServerProcess
from pipelines import batch_predict, monitor, stream_predict
from tests.test_monitor_stream import REPO, _rows, _send, trained_monitor_model

WINDOW = {"id": 4, "kind": "count", "size": 3, "start_ts": 1000, "end_ts": 2000}
RECORD = {"type": "monitoring", "source": "events", "window": WINDOW, "model_version": 2, "model_versions": {"2": 3},
          "events": {"in": 4, "predictions": 3, "dead_letters": {"parse": 1}, "dead_total": 1},
          "features": {"a": {"kind": "numeric", "js": float("nan")}}, "scores": {"js": 0.1},
          "alerts": ["a:js"]}
ALERT = {"type": "alert", "window": WINDOW, "model_version": 2, "source": "events", "feature": "a",
         "kind": "numeric", "metric": "js", "value": 0.7, "threshold": 0.3}


def test_a_record_is_one_row_with_its_kind_and_the_whole_record():
    names = [f["name"] for f in MONITOR_TABLE_SCHEMA["fields"]]
    row = record_row(clean_record(RECORD), written_ms=5)
    assert set(row) == set(names)
    assert (row["kind"], row["window_id"], row["window_kind"], row["model_version"], row["events_in"],
            row["predictions"], row["dead_letters"], row["alerts"], row["written_ts"]) == (
        "monitoring", 4, "count", 2, 4, 3, 1, 1, 5)
    assert row["feature"] is None and row["value"] is None
    assert json.loads(row["record"])["features"]["a"]["js"] is None  # strict JSON: NaN is null
    alert = record_row(ALERT, written_ms=5)
    assert (alert["kind"], alert["feature"], alert["metric"], alert["value"], alert["threshold"], alert["alerts"]) == (
        "alert", "a", "js", 0.7, 0.3, None)
    # The row id is the record's digest: the same record written twice is one record to the reader.
    assert record_row(ALERT, written_ms=9)["row_id"] == alert["row_id"] != row["row_id"]


def test_a_record_with_junk_fields_still_makes_a_row():
    row = record_row({"type": "monitoring", "window": {"id": "x", "end_ts": True}, "events": None,
                      "model_version": "v"})
    assert row["window_id"] is None and row["window_end_ts"] is None and row["model_version"] is None
    assert row["events_in"] is None and row["alerts"] == 0


@pytest.mark.parametrize("argv,message", [
    (["--monitor_table=test:d.t"], "--monitor_table: only applies with --monitor"),
    (["--monitor", "--monitor_table=not a table"], "--monitor_table: expected PROJECT:DATASET.TABLE"),
    (["--monitor", "--monitor_table=d.t"], "--monitor_table: 'd.t' names no project"),
    (["--monitor", "--monitor_table=test:d.t", "--bigquery_endpoint=ftp://x"], "--bigquery_endpoint: expected"),
])
def test_monitor_table_flag_errors_are_one_line(argv, message):
    options = parse_pipeline_options(argv, MonitorOptions)
    with pytest.raises(UserError) as e:
        options.view_as(MonitorOptions).validated()
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_monitor_table_takes_the_project_flag():
    settings = parse_pipeline_options(["--monitor", "--monitor_table=d.t", "--project=p"],
                                      MonitorOptions).view_as(MonitorOptions).validated()
    assert settings.table.table == "p:d.t" and settings.table.table_id == "p.d.t"
    assert settings.table.dead_letter_table == "p:d.t_error_records"


def test_dashboard_needs_exactly_one_source():
    with pytest.raises(UserError, match="--monitor_topic or --monitor_table"):
        monitor.run(["--monitor_topic=t", "--monitor_table=test:d.t"])
    with pytest.raises(UserError, match="--poll_interval"):
        monitor.run(["--monitor_table=test:d.t", "--poll_interval=0"])


# ----------------------------------------------------------------------------- against the emulator


def _wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.integration
def test_writer_and_reader_round_trip_a_table_that_does_not_exist_yet(bq_dataset, bq_endpoint):
    table = monitor_table(bq_dataset.table("mon"), endpoint=bq_endpoint)
    got = []
    reader = TableRecordReader(table, got.append, interval=0.2)  # waits for the table
    writer = TableRecordWriter(table, batch_wait=0.1)
    try:
        time.sleep(0.8)
        assert reader.polls == 0 and reader.errors == 0  # no table yet: waited for, not an error
        for r in (RECORD, ALERT, RECORD):  # RECORD twice: at-least-once delivery
            writer.put(clean_record(r))
        assert _wait(lambda: len(got) == 2)
        assert _wait(lambda: reader.polls >= 3)  # later polls (overlap) bring nothing new
    finally:
        writer.close()
        reader.stop()
    assert writer.written == 3 and writer.refused == 0 and reader.errors == 0
    assert [json.loads(g)["type"] for g in got] == ["monitoring", "alert"]
    assert len(got) == 2
    assert sorted(r["kind"] for r in bq_dataset.rows("mon")) == ["alert", "monitoring", "monitoring"]


def _events(rows, n_normal, n_shift, rng):
    out = []
    for i, j in enumerate(rng.integers(0, len(rows), n_normal + n_shift)):
        e = dict(rows[j], event_id=f"e{i}")
        if i >= n_normal:
            e["average_montly_hours"] *= 3
            e["sales"] = "brand-new-category" if rng.random() < 0.6 else e["sales"]
        out.append(e)
    return out


def _table_records(bq_dataset, name):
    rows = bq_dataset.rows(name)
    return [json.loads(r["record"]) for r in rows], rows


@pytest.mark.integration
@pytest.mark.slow
def test_stream_predict_to_a_table_then_the_dashboard_serves_those_windows(
        kafka_broker, new_topic, bq_dataset, bq_endpoint, tmp_path_factory, tmp_path):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows, _ = _rows(csv_path, "left")
    window = 300
    events = _events(rows, 3 * window, window, np.random.default_rng(3))
    source, out, dlq = (new_topic(prefix=p) for p in ("in", "out", "dlq"))
    _send(kafka_broker, source, events + [b"not json"])
    table = bq_dataset.table("monitor")
    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}",
                                 "--runner=DirectRunner", "--streaming", f"--max_records={len(events) + 1}",
                                 "--max_read_time=300", "--monitor", f"--monitor_window={window}",
                                 f"--monitor_table={table}", f"--bigquery_endpoint={bq_endpoint.rest}"])
    assert result.counts["predictions"] == len(events) and result.counts["dead_letters"] == 1
    records, table_rows = _table_records(bq_dataset, "monitor")
    windows = {r["window"]["id"]: r for r in records if r["type"] == "monitoring"}
    alerts = [r for r in records if r["type"] == "alert"]
    assert sorted(windows) == [0, 1, 2, 3] and all(w["events"]["predictions"] == window for w in windows.values())
    assert sum(w["events"]["dead_total"] for w in windows.values()) == 1
    assert alerts and all(a["window"]["id"] == 3 for a in alerts)
    assert {a["feature"] for a in alerts} - {SCORE_FEATURE} == {"average_montly_hours", "sales"}
    lifted = {(r["kind"], r["window_id"], r["feature"], r["metric"]) for r in table_rows}
    assert ("monitoring", 3, None, None) in lifted and ("alert", 3, "sales", "linf") in lifted

    # The live dashboard, polling the table, served over a real socket.
    with ServerProcess(["-m", "pipelines.monitor", f"--monitor_table={table}",
                        f"--bigquery_endpoint={bq_endpoint.rest}", f"--model_dir={model_root}",
                        "--poll_interval=0.5"], env={"PYTHONPATH": REPO}, cwd=REPO) as server:
        server.wait_ready("/healthz", timeout=120)
        api = {}

        def arrived():
            api.update(server.get("/api/records?since=0")[1])
            return len(api["records"]) == len(windows) and len(api["alerts"]) == len(alerts)

        assert _wait(arrived, 60), api.get("seen")
        assert sorted(r["window"]["id"] for r in api["records"]) == [0, 1, 2, 3] and api["bad"] == 0
        status, page = server.get("/")
        assert status == 200 and f"beam_ml monitor: bigquery:{table}" in page
        if chromium() is not None:  # the page draws those windows in a real browser, without console errors
            png = str(tmp_path / "dashboard.png")
            shot = screenshot(server.url + "/", png, height=1400)
            assert shot.returncode == 0 and shot.console_errors == [], shot.stderr
            cells = re.findall(r'<rect[^>]*data-feature="([^"]+)"', dump_dom(server.url + "/"))
            assert len(cells) == len(windows) * 10  # 9 features + the score per window
        server.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_batch_predict_and_the_server_write_their_records_to_a_table(bq_dataset, bq_endpoint, tmp_path_factory,
                                                                     tmp_path):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    table = bq_dataset.table("batch_monitor")
    out = tmp_path / "preds.jsonl"
    run = batch_predict.run([f"--model_dir={model_root}", f"--input={csv_path}", f"--output={out}", "--monitor",
                             f"--monitor_table={table}", f"--bigquery_endpoint={bq_endpoint.rest}",
                             "--runner=DirectRunner"])
    records, _ = _table_records(bq_dataset, "batch_monitor")
    assert [r["type"] for r in records] == ["monitoring"]  # training data against itself: no alert
    assert records[0]["window"]["kind"] == "all" and records[0]["events"]["predictions"] == run.counts["predictions"]
    assert not os.path.exists(f"{out}.monitoring.jsonl")  # the table took them

    # The model server: records queued by its scoring thread, all in the table once it has stopped.
    rows, _ = _rows(csv_path, "left")
    server_table = bq_dataset.table("server_monitor")
    rng = np.random.default_rng(5)
    with ServerProcess(["-m", "pipelines.serve", f"--model_dir={model_root}", "--monitor", "--monitor_window=100",
                        f"--monitor_table={server_table}", f"--bigquery_endpoint={bq_endpoint.rest}"],
                       env={"PYTHONPATH": REPO}, cwd=REPO) as server:
        server.wait_ready()
        for batch in (_events(rows, 100, 0, rng), _events(rows, 0, 100, rng)):
            status, body = server.predict([{k: v for k, v in e.items() if k != "event_id"} for e in batch])
            assert status == 200 and len(body["predictions"]) == 100
        assert server.stop() == 0
    records, _ = _table_records(bq_dataset, "server_monitor")
    windows = {r["window"]["id"]: r for r in records if r["type"] == "monitoring"}
    assert sorted(windows) == [0, 1] and windows[1]["model_version"] == 1
    alerts = [r for r in records if r["type"] == "alert"]
    assert {a["feature"] for a in alerts} - {SCORE_FEATURE} == {"average_montly_hours", "sales"}
    assert all(a["window"]["id"] == 1 for a in alerts) and not math.isnan(alerts[0]["value"])
