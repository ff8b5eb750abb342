"""Dialect detection (delimiter, quoted line breaks), flag values, and the dialect in the spec."""
import gzip
import json

import pytest

from beam_ml.errors import UserError
from beam_ml.io.dialect import Dialect, detect_dialect, parse_delimiter, record_is_open, sniff_dialect
from beam_ml.spec import DatasetSpec, infer_spec, read_header

ROWS = "".join(f"{i}{{d}}{i % 7}.5{{d}}{'ab'[i % 2]}{{d}}{'yes' if i % 3 else 'no'}\n" for i in range(60))


def _sniff(text: str, **kw) -> Dialect:
    return sniff_dialect(text.encode(), True, "f.csv", **kw)


@pytest.mark.parametrize("d", [",", ";", "\t", "|"])
def test_delimiter_is_detected_from_header_and_sample(d):
    assert _sniff(f"id{d}x{d}cat{d}label\n" + ROWS.format(d=d)).delimiter == d


def test_decimal_commas_in_a_semicolon_file_do_not_fool_detection():
    text = "a;b;c\n" + "".join(f"{i},5;{i},25;x\n" for i in range(50))
    assert _sniff(text).delimiter == ";"


def test_commas_inside_quoted_text_of_a_comma_file():
    text = "id,note,y\n" + "".join(f'{i},"a; b; c",1\n' for i in range(50))
    assert _sniff(text).delimiter == ","


def test_quoted_line_breaks_are_detected_and_stray_quotes_are_not_mistaken_for_them():
    multi = "id,note,y\n" + "".join(f'{i},"line one\nline two",1\n' if i % 10 == 0 else f"{i},x,0\n"
                                    for i in range(50))
    assert _sniff(multi).multiline is True
    stray = "id,note,y\n" + "".join(f'{i},"x,0\n' if i % 10 == 0 else f"{i},x,0\n" for i in range(50))
    assert _sniff(stray).multiline is False
    # Two stray quotes in the same column make a 3-field "record" over whole rows: still not multiline.
    pair = "id,note,y\n" + "".join(f'{i},"x,0\n' if i in (5, 9) else f"{i},x,0\n" for i in range(50))
    assert _sniff(pair).multiline is False
    assert _sniff(multi, multiline=False).multiline is False  # a given value wins


def test_flag_values_and_errors():
    assert parse_delimiter("tab") == parse_delimiter("\\t") == parse_delimiter("\t") == "\t"
    assert parse_delimiter("semicolon") == ";" and parse_delimiter("|") == "|"
    with pytest.raises(UserError, match="--delimiter"):
        parse_delimiter(";;")
    assert Dialect(encoding="latin-1").encoding == "iso8859-1"
    assert Dialect(encoding="UTF8").encoding == "utf-8"
    with pytest.raises(UserError, match="--encoding: utf-16 is not ASCII-compatible"):
        Dialect(encoding="utf-16")
    with pytest.raises(UserError, match="--encoding: unknown encoding"):
        Dialect(encoding="klingon")
    with pytest.raises(UserError, match="--compression"):
        Dialect(compression="rar")
    with pytest.raises(UserError, match="bare CR"):
        _sniff("a,b\r1,2\r3,4\r")


def test_record_is_open_follows_csv_quoting():
    d = Dialect()
    assert record_is_open('1,"abc', d)
    assert record_is_open('"abc,1,2', d)
    assert not record_is_open('1,"a""b",2', d)       # an escaped quote
    assert not record_is_open("1,5'10\",2", d)        # a quote inside an unquoted value is literal
    assert record_is_open('1,"a""', d)                 # "" inside quotes: still open


def test_semicolon_gzip_file_is_inferred_and_its_dialect_stored(tmp_path):
    p = tmp_path / "export.csv.gz"
    with gzip.open(p, "wt", newline="") as f:
        f.write("\ufeffid;x;cat;label\r\n" + ROWS.format(d=";").replace("\n", "\r\n"))
    assert read_header(str(p)) == ["id", "x", "cat", "label"]  # BOM and CRLF gone
    spec = infer_spec(str(p), "label")
    assert spec.dialect == Dialect(delimiter=";")
    assert {c.name: c.role for c in spec.columns}["x"] == "numeric"
    assert spec.label_classes == ["no", "yes"]
    again = DatasetSpec.from_dict(json.loads(spec.to_json()))
    assert again.dialect == spec.dialect and again.to_dict() == spec.to_dict()


def test_a_spec_written_before_dialects_loads_with_the_default(tmp_path):
    old = {"version": 1, "task": "binary", "label": "y", "label_classes": ["0", "1"],
           "columns": [{"name": "x", "role": "numeric"}, {"name": "y", "role": "label"}]}
    (tmp_path / "spec.json").write_text(json.dumps(old))
    assert DatasetSpec.load(str(tmp_path / "spec.json")).dialect == Dialect()
    old["dialect"] = {"delimiter": "\t", "colour": "red"}
    (tmp_path / "bad.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="dialect: .*unknown field"):
        DatasetSpec.load(str(tmp_path / "bad.json"))


def test_flags_override_detection(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes("id|x|ville|label\n".encode() + "".join(
        f"{i}|{i}.5|{'Orléans' if i % 2 else 'Metz'}|{i % 2}\n" for i in range(40)).encode("cp1252"))
    d = detect_dialect(str(p), encoding="cp1252")
    assert d.delimiter == "|" and d.encoding == "cp1252"
    spec = infer_spec(str(p), "label", encoding="cp1252", delimiter="pipe")
    assert spec.dialect.encoding == "cp1252" and spec.column("ville").role == "categorical"
    with pytest.raises(UserError, match="file not found"):
        detect_dialect(str(tmp_path / "missing.csv"))
