"""pipelines.stream_predict against a real Kafka-compatible broker (Tansu on 127.0.0.1).

    python -m pytest tests/test_stream_predict.py -q -m integration

Events are produced with pipelines.produce (good ones) and kafka-python
(malformed ones); outputs are read back from the topics and compared with the
offline model (beam_ml.serving.ServingModel).
"""
import json
import os
import signal
import threading
import time

import pytest
from kafka import KafkaProducer

from beam_ml.errors import UserError
from beam_ml.producer import csv_events
from beam_ml.serving import ServingModel
from beam_ml.testing import read_topic
from beam_ml.testing.process import start_module
from pipelines import produce, stream_predict
from tests.model_fixture import export_copy


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _topics(new_topic) -> tuple[str, str, str]:
    """Fresh (input, predictions, dead letters) topics."""
    return new_topic(prefix="in"), new_topic(prefix="out"), new_topic(prefix="dlq")


def _csv_head(src: str, dst, rows: int, skip: int = 0) -> str:
    with open(src) as f:
        lines = f.read().splitlines()
    dst.write_text("\n".join([lines[0]] + lines[1 + skip:1 + skip + rows]) + "\n")
    return str(dst)


def _produce(bootstrap: str, topic: str, csv_path: str, rate: float = 0.0) -> dict:
    return produce.run([f"--input={csv_path}", f"--topic={topic}", f"--bootstrap_servers={bootstrap}",
                        f"--rate={rate}"])


# Malformed events and the stage that must reject each.
BAD_EVENTS = [
    (b"not json at all", "parse"),
    (b"[1, 2, 3]", "parse"),
    (b"\xff\xfe garbage", "parse"),
    (json.dumps({"event_id": "bad-missing", "Time": 1}).encode(), "validate"),
]


def _bad_event(template: dict, kind: str) -> bytes:
    event = dict(template)
    if kind == "string":
        event.update(event_id="bad-string", V4="twelve")
        return json.dumps(event).encode()
    event.update(event_id="bad-overflow")
    return json.dumps(event).replace('"V1": 0', '"V1": ' + "9" * 400).encode()


def _send_bad(bootstrap: str, topic: str, template: dict) -> dict[bytes, str]:
    """Sends malformed events; returns {value: stage expected to dead-letter it}."""
    template = dict(template, V1=0)
    bad = dict(BAD_EVENTS)
    bad[_bad_event(template, "string")] = "validate"
    bad[_bad_event(template, "overflow")] = "inference"
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in bad:
        producer.send(topic, value=value)
    producer.flush(10)
    producer.close()
    return bad


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    return read_topic(bootstrap, topic, expected, timeout)


def _events(csv_path: str) -> dict[str, dict]:
    return {event_id: event for event_id, event in csv_events(csv_path)}


def _offline(model_root: str, events: dict[str, dict]) -> dict[str, dict]:
    model = ServingModel.load(model_root)
    ids = sorted(events)
    return {i: p for i, p in zip(ids, model.predict_records([events[i] for i in ids]))}


def _argv(bootstrap, model_dir, topics, *extra):
    source, out, dlq = topics
    return [f"--model_dir={model_dir}", f"--input_topic={source}", f"--output_topic={out}",
            f"--dead_letter_topic={dlq}", f"--bootstrap_servers={bootstrap}", "--runner=DirectRunner",
            "--streaming", *extra]


@pytest.mark.integration
@pytest.mark.slow
def test_stream_scores_good_events_and_dead_letters_bad_ones(kafka_broker, new_topic, model_root, fraud,
                                                              tmp_path):
    topics = _topics(new_topic)
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 80)
    events = _events(csv_path)
    _produce(kafka_broker, topics[0], csv_path)
    bad = _send_bad(kafka_broker, topics[0], next(iter(events.values())))
    n = len(events) + len(bad)

    result = stream_predict.run(_argv(kafka_broker, model_root, topics, f"--max_records={n}",
                                      "--max_read_time=120", "--group_id=g1"))
    assert result.counts["rows_in"] == n
    assert result.counts["predictions"] + result.counts["dead_letters"] == n

    predictions = [json.loads(r.value) for r in _read_all(kafka_broker, topics[1], len(events))]
    dead = [json.loads(r.value) for r in _read_all(kafka_broker, topics[2], len(bad))]
    assert len(predictions) + len(dead) == n
    offline = _offline(model_root, events)
    threshold = ServingModel.load(model_root).threshold
    by_id = {p["event_id"]: p for p in predictions}
    assert set(by_id) == set(events) and len(predictions) == len(events)
    for event_id, p in by_id.items():
        assert p["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5)
        assert p["class"] == offline[event_id]["class"]
        assert p["model_version"] == 1 and p["threshold"] == pytest.approx(threshold)
        assert p["processing_ts"] >= p["event_ts"] > 0 and p["produce_ts"] > 0
        assert p["key"] == event_id and p["source"] == f"{topics[0]}/0"
    assert sorted(d["stage"] for d in dead) == sorted(bad.values())
    for d in dead:
        assert d["reason"] and d["source"] == f"{topics[0]}/0" and isinstance(d["position"], int)
    assert {d["reason"] for d in dead if d["stage"] == "validate"} >= {"missing field 'V1'",
                                                                        "field 'V4': expected a number, got 'twelve'"}


@pytest.mark.integration
@pytest.mark.slow
def test_csv_line_events_are_scored_like_json_ones(kafka_broker, new_topic, model_root, fraud, tmp_path):
    """--value_format=csv: CSV lines in the spec's column order; a wrong field count is a parse dead letter."""
    from kafka import KafkaProducer

    from beam_ml.formats.text import encode_csv_line

    topics = _topics(new_topic)
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 40)
    events = _events(csv_path)
    spec = ServingModel.load(model_root).spec
    producer = KafkaProducer(bootstrap_servers=kafka_broker)
    for event_id, event in events.items():
        producer.send(topics[0], key=event_id.encode(), value=encode_csv_line(event, spec.column_names))
    producer.send(topics[0], key=b"short", value=b"1.0,2.0,3.0")
    producer.flush()
    producer.close()
    n = len(events) + 1

    result = stream_predict.run(_argv(kafka_broker, model_root, topics, f"--max_records={n}",
                                      "--max_read_time=120", "--group_id=csv", "--value_format=csv"))
    assert result.counts["predictions"] + result.counts["dead_letters"] == n == result.counts["rows_in"]
    predictions = [json.loads(r.value) for r in _read_all(kafka_broker, topics[1], len(events))]
    dead = [json.loads(r.value) for r in _read_all(kafka_broker, topics[2], 1)]
    offline = _offline(model_root, events)
    by_key = {p["key"]: p for p in predictions}
    assert set(by_key) == set(events)
    for event_id, p in by_key.items():
        assert p["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5)
    assert len(dead) == 1 and dead[0]["stage"] == "parse" and "expected 31 fields" in dead[0]["reason"]


@pytest.mark.integration
@pytest.mark.slow
def test_max_records_is_a_total_and_the_run_ends_once_it_has_them(kafka_broker, new_topic, model_root, fraud,
                                                                   tmp_path):
    """A 3-partition topic holding exactly N events: all N scored once, and the run ends by itself."""
    source = new_topic(partitions=3, prefix="in")
    _, out, dlq = _topics(new_topic)
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 90)
    events = _events(csv_path)
    _produce(kafka_broker, source, csv_path)  # keyed by event id: spread over the partitions
    started = time.time()

    # --max_read_time only guards against a hang; the run must end well before it.
    result = stream_predict.run(_argv(kafka_broker, model_root, (source, out, dlq), f"--max_records={len(events)}",
                                      "--max_read_time=600", "--timestamp_policy=processing_time"))
    assert time.time() - started < 120, "the run waited beyond its N records"
    assert result.counts["rows_in"] == result.counts["predictions"] == len(events)
    predictions = [json.loads(r.value) for r in _read_all(kafka_broker, out, len(events))]
    assert sorted(p["event_id"] for p in predictions) == sorted(events)
    assert {p["source"] for p in predictions} == {f"{source}/{i}" for i in range(3)}
    # processing_time: each event's time is when it was read, not when it was produced.
    for p in predictions:
        assert started * 1000 <= p["event_ts"] <= p["processing_ts"] and p["produce_ts"] < started * 1000


@pytest.mark.integration
@pytest.mark.slow
def test_two_worker_processes_score_every_event_of_a_four_partition_topic(kafka_broker, new_topic, model_root,
                                                                          fraud, tmp_path):
    """--direct_running_mode=multi_processing --direct_num_workers=2: DoFns pickled and set up in two processes."""
    source = new_topic(partitions=4, prefix="in")
    _, out, dlq = _topics(new_topic)
    csv_path = _csv_head(fraud[1], tmp_path / "events.csv", 120)
    events = _events(csv_path)
    _produce(kafka_broker, source, csv_path)
    result = stream_predict.run(_argv(kafka_broker, model_root, (source, out, dlq), f"--max_records={len(events)}",
                                      "--max_read_time=300", "--group_id=two-workers",
                                      "--direct_running_mode=multi_processing", "--direct_num_workers=2"))
    assert result.counts["rows_in"] == result.counts["predictions"] == len(events)
    predictions = [json.loads(r.value) for r in _read_all(kafka_broker, out, len(events))]
    assert sorted(p["event_id"] for p in predictions) == sorted(events)  # none lost, none twice
    assert {p["source"] for p in predictions} == {f"{source}/{i}" for i in range(4)}
    offline = _offline(model_root, events)
    for p in predictions:
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5)


def _subprocess(argv, log_path):
    return start_module("pipelines.stream_predict", argv, log_path, cwd=REPO)


@pytest.mark.integration
@pytest.mark.slow
def test_restart_after_kill_loses_nothing(kafka_broker, new_topic, model_root, fraud, tmp_path):
    topics = _topics(new_topic)
    head = _csv_head(fraud[1], tmp_path / "head.csv", 20)
    tail = _csv_head(fraud[1], tmp_path / "tail.csv", 280, skip=20)
    events = {**_events(head), **_events(tail)}
    args = _argv(kafka_broker, model_root, topics, "--group_id=restart", "--max_read_time=300")
    _produce(kafka_broker, topics[0], head)
    proc, log = _subprocess(args, tmp_path / "run1.log")
    # Once the first run scores, the rest arrives at 20 events/s, so the kill lands mid-stream.
    producer = threading.Thread(target=_produce, args=(kafka_broker, topics[0], tail, 20.0))
    try:
        deadline = time.monotonic() + 180
        while len(_read_all(kafka_broker, topics[1], 20, timeout=2)) < 20:
            assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no predictions: " + (tmp_path / "run1.log").read_text()[-3000:]
        producer.start()
        while len(_read_all(kafka_broker, topics[1], 60, timeout=2)) < 60:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run1.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: in-flight bundles are lost
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    producer.join(60)
    before = {json.loads(r.value)["event_id"] for r in _read_all(kafka_broker, topics[1], 0, timeout=3)}
    assert 0 < len(before) < len(events), "the kill must land mid-stream"

    # Same group: resumes from the committed offsets and catches up.
    stream_predict.run(_argv(kafka_broker, model_root, topics, "--group_id=restart", "--max_read_time=25"))
    predictions = [json.loads(r.value) for r in _read_all(kafka_broker, topics[1], len(events))]
    ids = [p["event_id"] for p in predictions]
    assert set(ids) == set(events), f"lost: {sorted(set(events) - set(ids))[:10]}"
    # At least once: what was in flight at the kill may be scored twice, identically.
    offline = _offline(model_root, events)
    for p in predictions:
        assert p["score"] == pytest.approx(offline[p["event_id"]]["score"], abs=1e-5)
    assert len(ids) - len(set(ids)) < len(events) // 2


def _reload_mid_stream(kafka_broker, new_topic, model_dir, csv_path, tmp_path, half, publish, group):
    """Streams `half` events, calls publish() (a version 2 with threshold 0.25 appears under model_dir),
    streams `half` more; checks the first half was scored by version 1 and the second by version 2.

    Returns:
      (predictions by event id, the second half's events, the run's result).
    """
    topics = _topics(new_topic)
    first = _csv_head(csv_path, tmp_path / "first.csv", half)
    second = _csv_head(csv_path, tmp_path / "second.csv", half, skip=half)
    results = {}

    def run():
        # Ends once it has both halves (max_records is a total); max_read_time only guards a hang.
        results["run"] = stream_predict.run(_argv(kafka_broker, model_dir, topics, f"--group_id={group}",
                                                  "--reload_interval=0.5", f"--max_records={2 * half}",
                                                  "--max_read_time=150"))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _produce(kafka_broker, topics[0], first)
        assert len(_read_all(kafka_broker, topics[1], half, timeout=120)) == half
        publish()  # version 2 appears while the pipeline runs
        time.sleep(2)  # > reload_interval
        _produce(kafka_broker, topics[0], second)
        predictions = [json.loads(r.value) for r in _read_all(kafka_broker, topics[1], 2 * half, timeout=120)]
    finally:
        thread.join(240)
    assert not thread.is_alive()
    by_id = {p["event_id"]: p for p in predictions}
    first_ids, second_events = set(_events(first)), _events(second)
    assert set(by_id) == first_ids | set(second_events)
    assert {by_id[i]["model_version"] for i in first_ids} == {1}
    assert {(by_id[i]["model_version"], by_id[i]["threshold"]) for i in second_events} == {(2, 0.25)}
    assert results["run"].counts["model_reloads"] >= 1
    return by_id, second_events, results["run"]


@pytest.mark.integration
@pytest.mark.slow
def test_hot_reload_while_streaming(kafka_broker, new_topic, model_root, fraud, tmp_path):
    by_id, second, _ = _reload_mid_stream(kafka_broker, new_topic, model_root, fraud[1], tmp_path, 30,
                                          lambda: export_copy(model_root, threshold=0.25), "reload")
    offline = _offline(model_root, second)  # the latest version: 2
    for i in second:
        assert by_id[i]["score"] == pytest.approx(offline[i]["score"], abs=1e-5)


def test_side_input_reload_is_refused_on_the_local_runner(tmp_path):
    with pytest.raises(UserError, match="--model_reload=side_input"):
        stream_predict.run([f"--model_dir={tmp_path}", "--input_topic=a", "--output_topic=b",
                            "--dead_letter_topic=c", "--bootstrap_servers=127.0.0.1:1",
                            "--model_reload=side_input", "--runner=DirectRunner"])


def test_missing_flags_are_named():
    with pytest.raises(UserError, match="--output_topic"):
        stream_predict.run(["--model_dir=m", "--input_topic=a", "--dead_letter_topic=c"])


@pytest.mark.integration
@pytest.mark.slow
def test_hot_reload_of_a_gcs_model_root_while_streaming(kafka_broker, new_topic, fraud, gcs_root, tmp_path):
    """--model_dir=gs://...: served from GCS, and a version written there mid-stream is picked up."""
    import shutil

    from beam_ml import fs
    from beam_ml.model_store import MODEL_METADATA

    local_root = tmp_path / "model"
    shutil.copytree(fraud[0], local_root)
    root = f"{gcs_root}/models/fraud"
    fs.copy_tree(str(local_root), root)

    def upload_version_2():
        version_dir = export_copy(str(local_root), threshold=0.25)
        # Upload as an exporter would: the files a version is complete without first, then the
        # graph and the metadata, so the watcher never loads a partial version.
        last = {"saved_model.pb", MODEL_METADATA}
        names = [os.path.relpath(os.path.join(d, f), version_dir) for d, _, files in os.walk(version_dir)
                 for f in files]
        for name in sorted(names, key=lambda n: n in last):
            fs.copy(os.path.join(version_dir, name), f"{root}/2/{name}")

    _reload_mid_stream(kafka_broker, new_topic, root, fraud[1], tmp_path, 20, upload_version_2, "gcs-reload")
