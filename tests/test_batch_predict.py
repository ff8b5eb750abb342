"""pipelines.batch_predict end to end on a CSV with malformed rows.

    python -m pytest tests/test_batch_predict.py -q
"""
import csv
import json

import pytest

from beam_ml.errors import UserError
from beam_ml.serving import ServingModel
from pipelines import batch_predict
from tests.model_fixture import feature_rows, trained_fraud_model


@pytest.fixture(scope="module")
def fraud(tmp_path_factory):
    return trained_fraud_model(str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def messy_csv(fraud, tmp_path):
    """60 data rows of the training CSV, three of them broken; returns (path, good line numbers)."""
    with open(fraud[1]) as f:
        lines = f.read().splitlines()[:61]
    lines[4] += ",extra"                                   # line 5: wrong field count
    fields = lines[9].split(",")
    fields[2] = "abc"                                      # line 10: V2 not a number
    lines[9] = ",".join(fields)
    lines[20] = "1,2,3"                                    # line 21: truncated
    path = tmp_path / "new.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path), [n for n in range(2, 62) if n not in (5, 10, 21)]


def _offline(model_root, csv_path, lines):
    rows = {n: r for n, r in zip(range(2, 62), feature_rows(csv_path, 60))}
    model = ServingModel.load(model_root)
    return model, dict(zip(lines, model.predict_records([rows[n] for n in lines])))


@pytest.mark.slow
@pytest.mark.parametrize("mode", [
    [],
    # DoFns pickled, set up and torn down in two worker processes.
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
], ids=["in_process", "two_worker_processes"])
def test_jsonl_predictions_and_dead_letters_add_up(fraud, messy_csv, tmp_path, mode):
    path, good_lines = messy_csv
    out = tmp_path / "preds.jsonl"
    result = batch_predict.run([f"--model_dir={fraud[0]}", f"--input={path}", f"--output={out}",
                                "--max_batch_size=16", "--runner=DirectRunner", *mode])
    assert result.counts["rows_in"] == 60
    assert result.counts["predictions"] == 57 and result.counts["dead_letters"] == 3
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    dead = [json.loads(line) for line in (tmp_path / "preds.dead_letter.jsonl").read_text().splitlines()]
    assert len(preds) + len(dead) == 60
    assert sorted(d["position"] for d in dead) == [5, 10, 21]
    assert all(d["stage"] == "parse" and d["source"] == path and d["reason"] for d in dead)
    assert any("V2" in d["reason"] for d in dead)
    model, offline = _offline(fraud[0], path, good_lines)
    assert sorted(p["position"] for p in preds) == good_lines
    for p in preds:
        expected = offline[p["position"]]
        assert p["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert p["class"] == expected["class"]
        assert p["model_version"] == model.version and p["threshold"] == pytest.approx(model.threshold)
        assert p["Class"] in ("0", "1")  # the label column was in the file: kept for evaluation


@pytest.mark.slow
def test_csv_output_keeps_the_label_and_names_the_line(fraud, messy_csv, tmp_path):
    path, good_lines = messy_csv
    out = tmp_path / "preds.csv"
    dead_path = tmp_path / "dead.jsonl"
    batch_predict.run([f"--model_dir={fraud[0]}", f"--input={path}", f"--output={out}",
                       f"--dead_letter={dead_path}", "--runner=DirectRunner"])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["source", "line", "score", "class", "class_id", "threshold", "model_version", "Class"]
    assert sorted(int(r["line"]) for r in rows) == good_lines
    assert len(dead_path.read_text().splitlines()) == 3


@pytest.mark.slow
def test_file_without_label_is_scored(fraud, tmp_path):
    rows = feature_rows(fraud[1], 10)
    path = tmp_path / "nolabel.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "p.jsonl"
    result = batch_predict.run([f"--model_dir={fraud[0]}", f"--input={path}", f"--output={out}",
                                "--runner=DirectRunner"])
    assert result.counts == {**result.counts, "rows_in": 10, "predictions": 10, "dead_letters": 0}
    assert all("Class" not in json.loads(line) for line in out.read_text().splitlines())


@pytest.mark.parametrize("argv, flag", [
    (["--input=x.csv", "--output=o.jsonl"], "--model_dir"),
    (["--model_dir=m", "--output=o.jsonl"], "--input"),
    (["--model_dir=m", "--input=x.csv", "--output=o.txt"], "--output"),
    (["--model_dir=m", "--input=x.csv", "--output_topic=t"], "--dead_letter"),
    (["--model_dir=m", "--input=x.csv", "--output=o.csv", "--bogus=1"], "--bogus"),
])
def test_bad_flags_name_the_flag(argv, flag):
    with pytest.raises(UserError, match=flag):
        batch_predict.run(argv)


def test_main_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        batch_predict.main(["--model_dir=/nonexistent", "--input=x.csv", "--output=o.csv"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model_dir") and "\n" not in err


@pytest.mark.integration
@pytest.mark.slow
def test_model_input_and_output_on_gcs(fraud, messy_csv, gcs_root):
    """A gs:// model, a gs:// input and a gs:// output, run on the local runner: the same predictions."""
    from beam_ml import fs

    path, good_lines = messy_csv
    fs.copy_tree(fraud[0], f"{gcs_root}/models/fraud")
    fs.copy(path, f"{gcs_root}/in/new.csv")
    out = f"{gcs_root}/out/preds.jsonl"
    result = batch_predict.run([f"--model_dir={gcs_root}/models/fraud", f"--input={gcs_root}/in/*.csv",
                                f"--output={out}", "--runner=DirectRunner"])
    assert result.counts["predictions"] == 57 and result.counts["dead_letters"] == 3
    preds = [json.loads(line) for line in fs.read_text(out).splitlines()]
    dead = [json.loads(line) for line in fs.read_text(f"{gcs_root}/out/preds.dead_letter.jsonl").splitlines()]
    assert sorted(d["position"] for d in dead) == [5, 10, 21]
    assert all(d["source"] == f"{gcs_root}/in/new.csv" for d in dead)
    _, offline = _offline(fraud[0], path, good_lines)
    assert sorted(p["position"] for p in preds) == good_lines
    for p in preds:
        assert p["score"] == pytest.approx(offline[p["position"]]["score"], abs=1e-5)
