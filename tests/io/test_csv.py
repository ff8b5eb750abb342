"""The Arrow CSV reader: typing, missing values, dead letters with file and line."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_ml.errors import UserError
from beam_ml.errors import DEAD_TAG
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.csv import ReadCsvBatches, expand_input, iter_chunks, parse_csv_chunk
from beam_ml.spec import ColumnSpec, DatasetSpec


def _spec():
    return DatasetSpec(columns=[ColumnSpec("id", "key"), ColumnSpec("age", "numeric"),
                                ColumnSpec("dept", "categorical", max_categories=5),
                                ColumnSpec("ssn", "mask"), ColumnSpec("label", "label")],
                       task="binary", label="label", label_classes=["No", "Yes"]).validate()


BAD_CSV = (
    "id,age,dept,ssn,label\n"
    "1,30,sales,123456789,Yes\n"       # line 2 good
    "2,,hr,123456789,No\n"             # line 3 good, age missing
    "3,40,sales\n"                     # line 4 wrong field count
    "\n"                               # line 5 blank: not a record
    "4,abc,it,123456789,No\n"          # line 6 non-numeric age
    "5,50,sales,123456789,Maybe\n"     # line 7 unknown label
    "6,NA,,123456789,No\n"             # line 8 good, both missing
    "7,61,it,123456789,\n"             # line 9 missing label
    "8, 62 ,it,123456789,Yes\n"        # line 10 good (spaces around a number)
)


def test_parse_chunk_types_missing_values_and_dead_letters():
    r = parse_csv_chunk(BAD_CSV.split("\n", 1)[1].encode(), 2, "f.csv",
                        ["id", "age", "dept", "ssn", "label"], _spec())
    b = r.batch.to_pydict()
    assert b["id"] == ["1", "2", "6", "8"]
    assert b[LINE_COLUMN] == [2, 3, 8, 10]
    ages = [v[0] for v in b["age"]]
    assert ages[0] == 30 and np.isnan(ages[1]) and np.isnan(ages[2]) and ages[3] == 62
    assert [v[0] for v in b["dept"]] == [b"sales", b"hr", b"", b"it"]
    assert "ssn" not in b  # PII never enters the batch
    dead = {d.position: d for d in r.dead}
    assert sorted(dead) == [4, 6, 7, 9]
    assert "wrong number of fields: expected 5, got 3" in dead[4].reason
    assert "column 'age': expected a number, got 'abc'" in dead[6].reason
    assert "unknown label 'Maybe'" in dead[7].reason
    assert "missing label" in dead[9].reason
    assert all(d.source == "f.csv" for d in r.dead)
    assert "123456789" not in dead[6].raw and "*****6789" in dead[6].raw  # masked PII
    assert r.lines == 8 == r.batch.num_rows + len(r.dead)  # blank line is not a record


def test_chunks_cut_at_line_boundaries_keep_line_numbers(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(5000)) + "9,9")  # no final newline
    chunks = list(iter_chunks(str(p), chunk_bytes=1000))
    assert len(chunks) > 10
    total = 0
    for first_line, chunk in chunks:
        assert chunk.endswith(b"\n")
        assert first_line == 2 + total
        total += chunk.count(b"\n")
    assert total == 5001


def test_read_csv_batches_pipeline_counts_add_up(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text(BAD_CSV)
    with TestPipeline() as pipeline:
        out = pipeline | ReadCsvBatches(str(p), _spec(), chunk_bytes=64)
        good = out["rows"] | "Ids" >> beam.FlatMap(lambda b: b.column("id").to_pylist())
        dead = out[DEAD_TAG] | "Lines" >> beam.Map(lambda d: (d.source, d.position))
        assert_that(good, equal_to(["1", "2", "6", "8"]), label="Good")
        assert_that(dead, equal_to([(str(p), n) for n in (4, 6, 7, 9)]), label="Dead")


def test_expand_input_errors(tmp_path):
    with pytest.raises(UserError, match="--input: file not found"):
        expand_input(str(tmp_path / "nope.csv"))
    with pytest.raises(UserError, match="no file matches"):
        expand_input(str(tmp_path / "*.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="is empty"):
        expand_input(str(tmp_path / "empty.csv"))
