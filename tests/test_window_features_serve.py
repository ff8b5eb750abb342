"""--features_sql in the model server: over real HTTP, each instance scored with training's point-in-time features."""
import pytest

from beam_ml.features.cards import card_events, write_card_csv
from beam_ml.features.plan import FeaturePlan
from beam_ml.features.point_in_time import LiveFeatures
from beam_ml.model_store import resolve_version_dir
from beam_ml.server.models import LoadedModel
from beam_ml.server.process import ServerProcess
from tests.test_serve import ROOT
from tests.test_window_features_stream import _offline_scores, _train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    """(rows, event ids, model dir, offline scores) of a model trained with the card velocity statement."""
    tmp_path = tmp_path_factory.mktemp("featured")
    rows = card_events(900, cards=25, seed=11)
    path = write_card_csv(str(tmp_path / "cards.csv"), rows)
    out = tmp_path / "model_out"
    model_dir = _train(path, out)
    offline_rows, offline = _offline_scores(path, out, model_dir)
    ids = [f"cards.csv:{i + 2}" for i in range(len(rows))]
    assert sum(offline_rows[i]["tx_10m"] > 0 for i in ids) > 50  # the windows are not empty
    return rows, ids, model_dir, offline


def _instances(rows):
    # the instances carry the key and event-time columns, not the features: the server computes them
    return [{k: r[k] for k in ("card_id", "ts", "Amount", "V1")} for r in rows]


def test_the_server_reproduces_training_features_and_scores(featured):
    rows, ids, model_dir, offline = featured
    instances = _instances(rows)
    with ServerProcess(["-m", "pipelines.serve", f"--model_dir={model_dir}"], env={"PYTHONPATH": ROOT},
                       cwd=ROOT) as server:
        server.wait_ready()
        status, meta = server.get("/v1/models/model/metadata")
        assert status == 200
        assert meta["metadata"]["dataset_spec"]["window_features"]["computed"] == ["tx_10m", "amount_10m", "max_10m"]
        # a bad instance is refused (400, naming the column) and changes no window
        status, body = server.predict([{"ts": rows[0]["ts"], "Amount": 1.0, "V1": 0.0}])
        assert status == 400 and "card_id" in body["error"], body
        got, start, size = [], 0, 1
        while start < len(instances):  # requests of 1..13 instances, one after another: arrival order
            status, body = server.predict(instances[start:start + size])
            assert status == 200, body
            got += body["predictions"]
            start, size = start + size, size % 13 + 1
        assert server.stop() == 0
    assert len(got) == len(ids)
    for event_id, p in zip(ids, got):
        assert p["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5), event_id


def test_a_failed_batch_call_does_not_count_its_events_twice(featured):
    """The model call for a merged batch fails: each row is scored alone, and the events join their windows once."""
    rows, ids, model_dir, offline = featured
    instances = _instances(rows)
    loaded = LoadedModel.open(resolve_version_dir(model_dir), None,
                              lambda spec: LiveFeatures(FeaturePlan.from_dict(spec.features)))
    real = loaded.model.predict_records
    failed = []

    def fails_on_batches(records):  # injected fault: any call with more than one row raises
        if len(records) > 1:
            failed.append(len(records))
            raise RuntimeError("injected: the batched model call failed")
        return real(records)

    loaded.model.predict_records = fails_on_batches
    got = loaded.score(instances[:300])
    loaded.model.predict_records = real
    got += loaded.score(instances[300:])
    assert failed == [300]
    for event_id, p in zip(ids, got):  # the later events' features would be off if the first 300 joined twice
        assert p["score"] == pytest.approx(offline[event_id]["score"], abs=1e-5), event_id
