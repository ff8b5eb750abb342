"""Flex Template metadata stays generated from the options classes (no drift)."""
import pytest

from beam_ml.errors import UserError
from beam_ml.options import MonitorOptions
from pipelines import batch_predict, stream_predict
from templates import flex


def test_checked_in_metadata_matches_the_options_classes():
    assert flex.main(["--check"]) == 0, "run: python -m templates.flex"


def test_train_template_exposes_flags_and_hides_secrets():
    names = {p["name"] for p in flex.metadata_for("train")["parameters"]}
    assert {"input", "label_column", "output_dir", "epochs", "input_topic", "bootstrap_servers",
            "kafka_config"} <= names
    assert "sasl_password" not in names


MONITOR_FLAGS = {"monitor", "monitor_window", "monitor_topic", "monitor_table", "alert_topic", "monitor_thresholds",
                 "label_topic", "metrics_port", "metrics_host"}


def test_prediction_templates_expose_the_monitor_flags():
    assert MONITOR_FLAGS <= set(MonitorOptions.FLAGS)  # every monitor flag is checked here
    for pipeline in ("stream_predict", "batch_predict"):
        params = {p["name"]: p for p in flex.metadata_for(pipeline)["parameters"]}
        assert MONITOR_FLAGS | {"bigquery_endpoint"} <= set(params), pipeline
        assert "BigQuery table" in params["monitor_table"]["helpText"]
    # The templates launch pipelines that parse what the metadata lists: a monitor flag is accepted there.
    for run in (stream_predict.run, batch_predict.run):
        with pytest.raises(UserError) as e:
            run(["--model_dir=/nonexistent", "--input_topic=t", "--monitor", "--monitor_table=p:d.t",
                 "--monitor_window=30s"])
        assert "unknown flag" not in str(e.value)
