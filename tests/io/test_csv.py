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


# ------------------------------------------------------------ files users bring
def _counts(result):
    from beam_ml.metrics import READ, query_counter

    return {k: query_counter(result, READ, k) for k in ("lines_in", "rows_good", "rows_dead", "blank_lines")}


def _collect(pattern, spec, **kw):
    """In-process read through the pipeline's own per-file code path (read_csv_file)."""
    from beam_ml.io.csv import read_csv_file

    good, dead, lines, blank = {}, {}, 0, 0
    for r in read_csv_file(pattern, spec, **kw):
        lines += r.lines
        blank += r.blank
        for d in r.dead:
            assert d.source == pattern
            dead[d.position] = d
        if r.batch is not None:
            good.update(zip(r.batch.column(LINE_COLUMN).to_pylist(), r.batch.column("id").to_pylist()))
    assert lines == len(good) + len(dead)
    return good, dead, blank


GOOD_ROWS = "".join(f"{i},{20 + i % 40},{'sales' if i % 3 else 'hr'},{100000000 + i},{'Yes' if i % 4 else 'No'}\n"
                    for i in range(1, 301))


@pytest.mark.parametrize("ext,opener", [(".gz", "gzip"), (".bz2", "bz2"), (".zst", "zstandard"), ("", None)])
def test_compressed_files_are_read_by_extension(tmp_path, ext, opener):
    import importlib

    data = ("id,age,dept,ssn,label\n" + GOOD_ROWS).encode()
    p = tmp_path / f"data.csv{ext}"
    if opener == "zstandard":
        p.write_bytes(importlib.import_module("zstandard").ZstdCompressor().compress(data))
    elif opener:
        p.write_bytes(importlib.import_module(opener).compress(data))
    else:
        p.write_bytes(data)
    good, dead, _ = _collect(str(p), _spec(), chunk_bytes=256, range_bytes=1000)
    assert good == {i + 1: str(i) for i in range(1, 301)} and not dead


def test_compression_flag_overrides_the_extension(tmp_path):
    import gzip

    p = tmp_path / "data.bin"
    p.write_bytes(gzip.compress(("id,age,dept,ssn,label\n" + GOOD_ROWS).encode()))
    from beam_ml.io.dialect import Dialect

    good, dead, _ = _collect(str(p), _spec(), dialect=Dialect(compression="gzip"))
    assert len(good) == 300 and not dead


def test_the_issue_file_stray_quote_latin1_bytes_blank_lines(tmp_path):
    """The issue's failures in one file: every good row kept with its line, each bad line dead alone."""
    lines = ["id,age,dept,ssn,label"]
    bad = {}
    for i in range(1, 201):
        row = f"{i},{20 + i % 40},sales,123456789,{'Yes' if i % 4 else 'No'}"
        if i == 20:
            row = '"' + row                       # a stray quote at the start of a row
            bad[len(lines) + 1] = "unterminated quoted field"
        elif i == 50:
            row = row.replace("sales", "sal\xe9s")  # Latin-1 bytes in a UTF-8 file
            bad[len(lines) + 1] = "invalid UTF-8 at byte 10 (0xe9)"
        elif i == 90:
            lines.append("")                       # a blank line
            lines.append("   ")                    # and a whitespace-only one
        lines.append(row)
    p = tmp_path / "issue.csv"
    p.write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")  # CRLF, no BOM
    good, dead, blank = _collect(str(p), _spec(), chunk_bytes=512, range_bytes=2048)
    assert sorted(dead) == sorted(bad)
    for line, reason in bad.items():
        assert reason in dead[line].reason
    assert blank == 2
    expected = {}
    line = 1
    for text in lines[1:]:
        line += 1
        if text.strip() and line not in bad:
            expected[line] = text.split(",")[0]
    assert good == expected and len(good) == 198
    # The same file through the pipeline: counters add up, blank lines apart.
    pipeline = TestPipeline()
    out = pipeline | ReadCsvBatches(str(p), _spec(), chunk_bytes=512, range_bytes=2048)
    assert_that(out[DEAD_TAG] | beam.Map(lambda d: d.position), equal_to(sorted(bad)), label="DeadLines")
    result = pipeline.run()
    result.wait_until_finish()
    assert _counts(result) == {"lines_in": 200, "rows_good": 198, "rows_dead": 2, "blank_lines": 2}


def test_quoted_line_breaks_keep_working_and_name_the_first_line(tmp_path):
    from beam_ml.io.dialect import detect_dialect

    text = "id,age,dept,ssn,label\n"
    starts = {}
    line = 2
    for i in range(1, 61):
        dept = '"research\nand development"' if i % 7 == 0 else "sales"
        starts[line] = str(i)
        text += f"{i},{30 + i % 9},{dept},123456789,Yes\n"
        line += 1 + dept.count("\n")
    p = tmp_path / "multi.csv"
    p.write_text(text)
    dialect = detect_dialect(str(p))
    assert dialect.multiline
    good, dead, _ = _collect(str(p), _spec(), dialect=dialect, chunk_bytes=97)
    assert good == starts and not dead


def test_byte_ranges_read_every_line_once_with_exact_numbers(tmp_path):
    p = tmp_path / "data.csv"
    rows = GOOD_ROWS.splitlines()
    rows[10] = rows[10] + ",extra"       # wrong field count
    rows[150] = "\n"                      # two blank lines
    p.write_text("id,age,dept,ssn,label\n" + "\n".join(rows) + "\n")
    whole = _collect(str(p), _spec(), range_bytes=1 << 30)
    for range_bytes in (37, 300, 1024):
        assert _collect(str(p), _spec(), range_bytes=range_bytes, chunk_bytes=100) == whole
    good, dead, blank = whole
    assert sorted(dead) == [12] and blank == 2 and len(good) == 298


def test_one_file_is_split_into_ranges_in_the_pipeline(tmp_path):
    from beam_ml.io.csv import plan_ranges

    p = tmp_path / "data.csv"
    p.write_text("id,age,dept,ssn,label\n" + GOOD_ROWS)
    ranges = plan_ranges(str(p), p.stat().st_size, _spec().dialect, range_bytes=2000)
    assert len(ranges) > 3 and ranges[-1].end is None
    pipeline = TestPipeline()
    out = pipeline | ReadCsvBatches(str(p), _spec(), range_bytes=2000, chunk_bytes=300)
    rows = out["rows"] | beam.FlatMap(lambda b: zip(b.column(LINE_COLUMN).to_pylist(), b.column("id").to_pylist()))
    assert_that(rows, equal_to([(i + 1, str(i)) for i in range(1, 301)]))
    pipeline.run().wait_until_finish()


def test_globs_are_matched_when_the_pipeline_runs(tmp_path):
    (tmp_path / "a.csv").write_text("id,age,dept,ssn,label\n1,30,sales,1,Yes\n")
    pipeline = TestPipeline()
    out = pipeline | ReadCsvBatches(str(tmp_path / "*.csv"), _spec())
    (tmp_path / "b.csv").write_text("id,age,dept,ssn,label\n2,31,hr,2,No\n")  # after construction
    ids = out["rows"] | beam.FlatMap(lambda b: b.column("id").to_pylist())
    assert_that(ids, equal_to(["1", "2"]))
    pipeline.run().wait_until_finish()


def test_a_file_without_the_spec_columns_fails_fast_naming_the_delimiter(tmp_path):
    p = tmp_path / "semi.csv"
    p.write_text("id;age;dept;ssn;label\n1;30;sales;1;Yes\n")
    with pytest.raises(UserError, match="lacks column.*pass --delimiter"):
        ReadCsvBatches(str(p), _spec())
    good, dead, _ = _collect(str(p), _spec(), dialect=_spec().dialect.replace(delimiter=";"))
    assert good == {2: "1"}


def test_encoding_flag_reads_a_cp1252_file(tmp_path):
    p = tmp_path / "fr.csv"
    p.write_bytes("id,age,dept,ssn,label\n1,30,Comptabilité,1,Yes\n2,31,R\x81D,1,No\n".encode("latin-1"))
    pipeline = TestPipeline()
    out = pipeline | ReadCsvBatches(str(p), _spec(), encoding="cp1252")
    depts = out["rows"] | beam.FlatMap(lambda b: [v[0].decode() for v in b.column("dept").to_pylist()])
    dead = out[DEAD_TAG] | beam.Map(lambda d: (d.position, d.reason))
    assert_that(depts, equal_to(["Comptabilité"]), label="Depts")
    assert_that(dead, equal_to([(3, "invalid cp1252 at byte 7 (0x81)")]), label="Dead")
    pipeline.run().wait_until_finish()


def test_csv_flags_parse_and_fail_naming_the_flag():
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_ml.jobs.settings import csv_dialect_flags
    from beam_ml.options import CsvReadOptions

    opts = PipelineOptions(["--delimiter=tab", "--encoding=latin-1", "--compression=gzip"])
    assert opts.view_as(CsvReadOptions).delimiter == "tab"
    assert csv_dialect_flags(opts) == {"delimiter": "\t", "encoding": "iso8859-1", "compression": "gzip"}
    assert csv_dialect_flags(PipelineOptions([])) == {}
    with pytest.raises(UserError, match="--compression"):
        csv_dialect_flags(PipelineOptions(["--compression=rar"]))


def test_a_truncated_gzip_keeps_the_rows_before_and_dead_letters_the_rest(tmp_path):
    import gzip

    rng = np.random.default_rng(7)
    rows = "".join(f"{i},{rng.integers(20, 60)},sales,{rng.integers(10**8, 10**9)},Yes\n" for i in range(1, 20001))
    data = gzip.compress(("id,age,dept,ssn,label\n" + rows).encode())
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(data[: len(data) // 2])  # an interrupted download
    good, dead, _ = _collect(str(p), _spec(), chunk_bytes=4096)
    assert len(dead) == 1
    (line, letter), = dead.items()
    assert "cannot decompress the file from this line on (gzip)" in letter.reason
    assert sorted(good) == list(range(2, line))  # every line before it, none after
    assert line > 9000  # all that half the compressed bytes hold
    (tmp_path / "plain.csv.gz").write_text("id,age,dept,ssn,label\n")
    with pytest.raises(UserError, match="pass --compression"):
        ReadCsvBatches(str(tmp_path / "plain.csv.gz"), _spec())
