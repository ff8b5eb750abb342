"""The model server over real HTTP on 127.0.0.1: a subprocess `python -m pipelines.serve` on a trained model.

    python -m pytest tests/test_serve.py -q -m integration

Routes and statuses, bad bodies and instances, the Vertex AI variables, the
stored cleaning statement, hot reload under concurrent clients, SIGTERM drain,
/metrics parsed by the Prometheus client's parser.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beam_ml.errors import UserError
from beam_ml.jobs.demo import ensure_fraud_sql_model, users_rows
from beam_ml.server.process import ServerProcess
from beam_ml.serving import ServingModel, score_records
from beam_ml.testing.process import find_free_port
from pipelines import predict
from tests.model_fixture import export_copy, feature_rows, trained_fraud_model

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def Server(model_dir: str, *flags: str, env: dict | None = None, port: int | None = None) -> ServerProcess:
    """`python -m pipelines.serve --model_dir=... FLAGS` on 127.0.0.1 (the port from AIP_HTTP_PORT when given)."""
    vertex = "AIP_HTTP_PORT" in (env or {})
    args = ["-m", "pipelines.serve", *([f"--model_dir={model_dir}"] if model_dir else []), *flags]
    if vertex:
        args.append("--host=127.0.0.1")
    return ServerProcess(args, env=dict(env or {}, PYTHONPATH=ROOT), port=port, cwd=ROOT, add_port=not vertex)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(a private copy of the trained model root, the training CSV): tests export versions into it."""
    root, csv_path = trained_fraud_model(str(tmp_path_factory.getbasetemp()))
    copy = str(tmp_path_factory.mktemp("serve") / "model")
    shutil.copytree(root, copy)
    return copy, csv_path


@pytest.fixture(scope="module")
def server(model):
    s = Server(model[0], "--reload_interval=0.5")
    try:
        s.wait_ready()
        yield s
    finally:
        assert s.stop() == 0


def _rows(model, n=3):
    return [{k: float(v) for k, v in r.items()} for r in feature_rows(model[1], n)]


# ------------------------------------------------------------------ routes
def test_status_and_pinned_status(server, model):
    status, body = server.get("/v1/models/model")
    assert status == 200
    [entry] = [e for e in body["model_version_status"] if e["version"] == "1"]
    assert entry == {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert server.get("/v1/models/model/versions/1")[0] == 200
    assert server.get("/v1/models/model/versions/99")[0] == 404
    status, body = server.get("/v1/models/other")
    assert status == 404 and "other" in body["error"]


def test_metadata_has_signatures_and_every_feature(server, model):
    status, body = server.get("/v1/models/model/metadata")
    assert status == 200
    assert body["model_spec"]["name"] == "model"
    sig = body["metadata"]["signature_def"]["signature_def"]["serve_dict"]
    assert sig["inputs"]["V1"]["dtype"] == "DT_FLOAT" and sig["outputs"]["class"]["dtype"] == "DT_STRING"
    spec = body["metadata"]["dataset_spec"]
    names = {f["name"]: f for f in spec["features"]}
    assert set(names) == {"Time", "Amount", *(f"V{i}" for i in range(1, 29))}
    assert names["V1"]["type"] == "numeric" and "default" in names["V1"]
    assert spec["task"] == "binary" and 0 <= spec["threshold"] <= 1


def test_predict_rows_match_the_offline_scorer(server, model):
    rows = _rows(model)
    status, body = server.predict(rows)
    assert status == 200
    offline = score_records(ServingModel.load(os.path.join(model[0], "1")), rows)
    assert len(body["predictions"]) == len(rows)
    for got, want in zip(body["predictions"], offline):
        assert set(got) == set(want)
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
        assert (got["class"], got["class_id"], got["threshold"]) == (want["class"], want["class_id"],
                                                                    want["threshold"])
        assert isinstance(got["model_version"], int)


def test_predict_columnar_and_pinned_version(server, model):
    rows = _rows(model, 2)
    inputs = {k: [r[k] for r in rows] for k in rows[0]}
    status, body = server.request("POST", "/v1/models/model/versions/1:predict",
                                  {"inputs": inputs, "signature_name": "serve_dict"})
    assert status == 200
    assert len(body["outputs"]["score"]) == 2 and body["outputs"]["model_version"] == [1, 1]
    status, rows_body = server.predict(rows, "/v1/models/model/versions/1:predict")
    assert [p["score"] for p in rows_body["predictions"]] == pytest.approx(body["outputs"]["score"])


def test_missing_fields_take_defaults(server):
    status, body = server.predict([{"V1": 0.5}, {}])
    assert status == 200 and len(body["predictions"]) == 2
    assert all(0.0 <= p["score"] <= 1.0 for p in body["predictions"])


@pytest.mark.parametrize("payload,status,fragment", [
    ({"instances": [{"V1": 1.0}, {"V1": "abc"}]}, 400, "instance 1: field 'V1'"),
    ({"instances": [{"V1": 1.0}, [1, 2]]}, 400, "instance 1"),
    ({"instances": [{"Amount": {"x": 1}}]}, 400, "instance 0: field 'Amount'"),
    ({"instances": []}, 400, "no instances"),
    ({"instances": {"V1": 1}}, 400, "'instances' must be a list"),
    ({"inputs": {"V1": [1, 2], "V2": [1]}}, 400, "'V2' has 1 values"),
    ({"instances": [{}], "inputs": {}}, 400, "exactly one"),
    ({"instances": [{}], "signature_name": "serving_default"}, 400, "not served"),
    ([1, 2], 400, "expected a JSON object"),
])
def test_bad_bodies_and_instances_get_400(server, payload, status, fragment):
    got, body = server.request("POST", "/v1/models/model:predict", payload)
    assert got == status and fragment in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]


def test_malformed_json_wrong_type_method_size_and_route(server):
    status, body = server.request("POST", "/v1/models/model:predict", raw=b'{"instances": [')
    assert status == 400 and body["error"].startswith("malformed JSON")
    status, body = server.request("POST", "/v1/models/model:predict", raw=b"\xff\xfe", content_type=None)
    assert status == 400
    status, body = server.request("POST", "/v1/models/model:predict", raw=b"{}", content_type="text/plain")
    assert status == 415 and "text/plain" in body["error"]
    status, body = server.request("PUT", "/v1/models/model:predict", raw=b"{}")
    assert status == 405 and "PUT" in body["error"]
    status, body = server.request("GET", "/v1/models/model:predict")
    assert status == 405
    status, body = server.request("POST", "/v1/models/model:predict",
                                  raw=b'{"instances": [' + b'{"V1": 1.0},' * 800_000 + b'{}]}')
    assert status == 413 and "larger than" in body["error"]
    status, body = server.get("/nope")
    assert status == 404 and "error" in body
    status, body = server.request("POST", "/v1/models/model/versions/x:predict", {"instances": [{}]})
    assert status == 404
    # still up and scoring
    assert server.predict([{"V1": 1.0}])[0] == 200


def test_metrics_parse_with_the_prometheus_parser(server):
    server.predict([{"V1": 1.0}])
    server.request("POST", "/v1/models/model:predict", raw=b"nope")
    status, text = server.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["beam_ml_serve_requests"].samples
                if s.name.endswith("_total")}
    assert requests[("/v1/models/{name}:predict", "200")] >= 1
    assert requests[("/v1/models/{name}:predict", "400")] >= 1
    errors = {s.labels["status"] for s in families["beam_ml_serve_errors"].samples}
    assert "400" in errors and "200" not in errors
    assert any(s.name.endswith("_bucket") for s in families["beam_ml_serve_request_latency_seconds"].samples)
    assert any(s.value >= 1 for s in families["beam_ml_serve_batch_size"].samples if s.name.endswith("_count"))
    [version] = families["beam_ml_serve_model_version"].samples
    assert version.value >= 1


# ------------------------------------------------------------------ hot reload under load
def test_hot_reload_under_concurrent_clients(server, model):
    rows = _rows(model, 1)
    stop = time.monotonic() + 60
    before = server.predict(rows)[1]["predictions"][0]["model_version"]

    def client(_):
        seen = []
        while time.monotonic() < stop:
            status, body = server.predict(rows)
            assert status == 200, body
            p = body["predictions"][0]
            seen.append((p["model_version"], p["threshold"]))
            if len(seen) > 20 and p["model_version"] > before:
                break
        return seen

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(8)]
        time.sleep(1.0)
        new_dir = export_copy(model[0], threshold=0.123)
        results = [f.result() for f in futures]
    new_version = int(os.path.basename(new_dir))
    seen = [v for r in results for v in r]
    assert all(v in (before, new_version) for v, _ in seen)
    assert all(t == 0.123 for v, t in seen if v == new_version)  # each response names the version that scored it
    assert any(v == new_version for v, _ in seen)
    assert server.predict(rows)[1]["predictions"][0]["model_version"] == new_version
    # the old version stays reachable, pinned
    status, body = server.predict(rows, f"/v1/models/model/versions/{before}:predict")
    assert status == 200 and body["predictions"][0]["model_version"] == before


# ------------------------------------------------------------------ Vertex AI, drain, cleaning
def test_vertex_ai_variables(model, tmp_path):
    port = find_free_port()
    env = {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": "/health/check",
           "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict", "AIP_STORAGE_URI": model[0]}
    s = Server("", env=env, port=port)
    try:
        deadline = time.monotonic() + 120
        statuses = []
        while time.monotonic() < deadline:
            try:
                status, _ = s.get("/health/check")
                statuses.append(status)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}
        rows = _rows(model, 2)
        status, body = s.request("POST", "/v1/endpoints/1/deployedModels/2:predict",
                                 {"instances": rows, "parameters": {"confidence": 0.5}})
        assert status == 200 and len(body["predictions"]) == 2 and "score" in body["predictions"][0]
        status, body = s.request("POST", "/v1/endpoints/1/deployedModels/2:predict", {"instances": [{"V3": []}]})
        assert status == 400 and "instance 0" in body["error"]
    finally:
        assert s.stop() == 0


def test_sigterm_drains_requests_in_flight(model):
    s = Server(model[0], "--max_batch_size=4")
    s.wait_ready()
    rows = _rows(model, 3)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(s.predict, rows * 50) for _ in range(16)]
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert s.proc.wait(60) == 0
    done = [body for status, body in results if status == 200]
    assert done and all(len(b["predictions"]) == 150 for b in done)
    # every request either completed or was refused at the socket, never failed mid-flight
    assert len(done) == 16


def test_bad_model_dir_fails_fast_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.serve", f"--model_dir={tmp_path}", "--port=0"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --model_dir")


@pytest.fixture(scope="module")
def sql_model(tmp_path_factory):
    base = os.environ.get("BEAM_ML_TEST_MODEL_CACHE") or str(tmp_path_factory.getbasetemp())
    root = ensure_fraud_sql_model(os.path.join(base, "fraud_sql_model"), os.path.join(base, "fraud_sql_data"),
                                  rows=3000, epochs=1, log=lambda m: None)
    return root


def test_the_models_cleaning_statement_applies(sql_model):
    s = Server(sql_model)
    try:
        s.wait_ready()
        status, meta = s.get("/v1/models/model/metadata")
        fields = {f["name"] for f in meta["metadata"]["dataset_spec"]["cleaning"]["instance_fields"]}
        assert {"userid", "User", "Amount"} <= fields
        known = users_rows()[0][0]
        event = {**{f"V{i}": 0.1 for i in range(1, 29)}, "Amount": None, "userid": known, "User": "Hans",
                 "Class": 0}
        unknown_user = dict(event, userid=999_999)  # the INNER JOIN drops it
        status, body = s.predict([event, unknown_user])
        assert status == 200, body
        scored, filtered = body["predictions"]
        assert 0 <= scored["score"] <= 1 and scored["model_version"] >= 1
        assert filtered == {"filtered": True, "model_version": scored["model_version"]}
        status, body = s.predict([dict(event, User="Zzyzx-unseen")])  # an unknown category: the OOV bucket
        assert status == 200 and 0 <= body["predictions"][0]["score"] <= 1
        status, body = s.predict([event, dict(event, V2="abc")])
        assert status == 400 and body["error"].startswith("instance 1:") and "V2" in body["error"]
    finally:
        assert s.stop() == 0


def test_predict_cli_calls_a_running_server(server, model, capsys):
    rows = feature_rows(model[1], 2)
    results = predict.run([f"--server={server.url}", f"--json={json.dumps(rows)}"])
    assert len(results) == 2 and all("score" in r and "model_version" in r for r in results)
    with pytest.raises(UserError, match="instance 0: field 'V1'"):
        predict.run([f"--server={server.url}", '--json={"V1": "abc"}'])
