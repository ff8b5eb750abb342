"""Duration windows close on time with no traffic: stream_predict (at the end of the read's idle bundles) and the
model server (a timer thread). Real processes over real sockets, Tansu on 127.0.0.1."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from beam_ml.server.process import ServerProcess
from beam_ml.testing import read_topic
from pipelines import stream_predict
from tests.test_monitor_stream import REPO, _rows, _send, trained_monitor_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _monitoring(bootstrap: str, topic: str, expected: int) -> list[dict]:
    got = read_topic(bootstrap, topic, expected, timeout=60, decode=lambda r: json.loads(r.value))
    return sorted((r for r in got if r["type"] == "monitoring"), key=lambda r: r["window"]["id"])


def test_stream_predict_closes_duration_windows_while_no_event_arrives(kafka_broker, new_topic, tmp_path_factory):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows, _ = _rows(csv_path, "left")
    events = [dict(rows[j], event_id=f"e{i}") for i, j in enumerate(np.random.default_rng(1).integers(0, len(rows),
                                                                                                      300))]
    source, out, dlq, mon = (new_topic(prefix=p) for p in ("in", "out", "dlq", "mon"))
    _send(kafka_broker, source, events)  # one burst, then nothing for the rest of the run
    result = stream_predict.run([f"--model_dir={model_root}", f"--input_topic={source}", f"--output_topic={out}",
                                 f"--dead_letter_topic={dlq}", f"--bootstrap_servers={kafka_broker}",
                                 "--runner=DirectRunner", "--streaming", "--max_read_time=25", "--poll_timeout=0.5",
                                 "--monitor", "--monitor_window=2s", f"--monitor_topic={mon}"])
    assert result.counts["predictions"] == 300
    records = _monitoring(kafka_broker, mon, 3)
    assert [r["window"]["id"] for r in records] == list(range(len(records)))
    assert sum(r["events"]["predictions"] for r in records) == 300
    idle = [r for r in records if r["events"]["in"] == 0]
    assert len(idle) >= 2, [r["events"] for r in records]  # closed with no event in them: on time, not by a poll
    for r in idle:
        w = r["window"]
        assert w["kind"] == "duration" and 2000 <= w["end_ts"] - w["start_ts"] < 2000 + 5000


def test_server_closes_duration_windows_without_requests(kafka_broker, new_topic, tmp_path_factory):
    model_root, csv_path = trained_monitor_model(str(tmp_path_factory.getbasetemp()), "retention")
    rows, _ = _rows(csv_path, "left")
    mon = new_topic(prefix="mon")
    with ServerProcess(["-m", "pipelines.serve", f"--model_dir={model_root}", "--monitor", "--monitor_window=1s",
                        f"--monitor_topic={mon}", f"--bootstrap_servers={kafka_broker}"],
                       env={"PYTHONPATH": REPO}, cwd=REPO) as server:
        server.wait_ready()
        status, body = server.predict(rows[:100])
        assert status == 200 and len(body["predictions"]) == 100
        time.sleep(4)  # no request: the windows still close
        assert server.stop() == 0
    records = _monitoring(kafka_broker, mon, 3)
    assert len(records) >= 3 and sum(r["events"]["predictions"] for r in records) == 100
    assert sum(1 for r in records if r["events"]["in"] == 0) >= 2
    assert all(r["window"]["end_ts"] - r["window"]["start_ts"] < 1000 + 2000 for r in records)
