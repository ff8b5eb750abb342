"""CSV rows as JSON events (the produce loop's pure parts)."""
import pytest

from beam_ml.errors import UserError
from beam_ml.producer import cell_value, csv_events, json_value


@pytest.mark.parametrize("text, value", [
    ("", None), ("12", 12), ("-3", -3), ("1.5", 1.5), (" 2e3 ", 2000.0), ("0012", 12),
    ("nan", "nan"), ("inf", "inf"), ("12 euros", "12 euros"), ("1234567890123456", 1234567890123456.0),
])
def test_cell_values(text, value):
    assert cell_value(text) == value


def test_events_carry_ids_and_malformed_rows_still_go_out(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("id,amount,country\nA1,12.5,FR\n\nA2,,DE\nA3,7\n")
    events = list(csv_events(str(path), key_column="id"))
    assert events[0] == ("A1", {"id": "A1", "amount": 12.5, "country": "FR", "event_id": "A1"})
    assert events[1] == ("A2", {"id": "A2", "amount": None, "country": "DE", "event_id": "A2"})
    # A short row is sent as what it has, for the pipeline to dead-letter (named by file and line).
    assert events[2] == ("tx.csv:5", {"_malformed": ["A3", "7"], "event_id": "tx.csv:5"})
    assert [i for i, _ in csv_events(str(path))] == ["tx.csv:2", "tx.csv:4", "tx.csv:5"]
    assert json_value(events[0][1]) == b'{"id":"A1","amount":12.5,"country":"FR","event_id":"A1"}'


def test_unknown_key_column_is_named(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("id,amount\n1,2\n")
    with pytest.raises(UserError, match="--key_column: column 'nope' is not in"):
        list(csv_events(str(path), key_column="nope"))
