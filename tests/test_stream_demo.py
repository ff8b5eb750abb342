"""pipelines.stream_demo end to end, small: its own broker, a session model, malformed events mixed in.

    python -m pytest tests/test_stream_demo.py -q -m integration

Checks that the summary adds up (every event is a prediction or a dead letter,
each malformed event is a dead letter of the right stage), never timings.
"""
import pytest

from beam_ml.jobs.demo import malformed_event
from pipelines import stream_demo


@pytest.mark.integration
@pytest.mark.slow
def test_demo_summary_adds_up(fraud, tmp_path):
    model_root, _ = fraud
    summary = stream_demo.run(["--events=600", "--malformed_fraction=0.02", f"--model_dir={model_root}",
                               f"--data_dir={tmp_path / 'data'}", "--seconds=120"])

    assert summary["events_in"] == 600 and summary["malformed_in"] == 12
    assert summary["rows_read"] == 600
    assert summary["predictions"] + summary["dead_letters"] == summary["events_in"]
    assert summary["dead_letters"] == summary["malformed_in"] > 0
    # not_json and not_object fail parsing; missing_field and not_a_number fail validation.
    assert summary["dead_letters_by_stage"] == {"parse": 6, "validate": 6}
    assert sum(summary["dead_letters_by_reason"].values()) == summary["dead_letters"]
    assert any("missing field 'V1'" in r for r in summary["dead_letters_by_reason"])
    assert 0 <= summary["fraud_alerts"] <= summary["predictions"]
    assert all(a["class"] == summary["positive_class"] for a in summary["top_alerts"])
    assert summary["throughput_events_per_s"] and summary["throughput_events_per_s"] > 0


def test_malformed_events_are_malformed():
    event = {"event_id": "e1", "V1": 0.5, "Amount": 3.0}
    assert b"not JSON" in malformed_event(event, "not_json")
    assert malformed_event(event, "not_object").startswith(b"[")
    assert b"V1" not in malformed_event(event, "missing_field")
    assert b"twelve" in malformed_event(event, "not_a_number")
    with pytest.raises(ValueError):
        malformed_event(event, "nope")


def test_bad_flags_are_named():
    from beam_ml.errors import UserError

    with pytest.raises(UserError, match="--events"):
        stream_demo.run(["--events=0"])
    with pytest.raises(UserError, match="--malformed_fraction"):
        stream_demo.run(["--malformed_fraction=0.9"])
