"""Spec inference, validation and round-trip on real-world-shaped CSVs."""
import json

import pytest

from beam_ml.errors import UserError
from beam_ml.spec import DatasetSpec, infer_spec, mask_value

MESSY = """customer_id,age,plan,monthly_fee,signup_date,notes,churned
{rows}"""


def _messy_csv(tmp_path, n=300):
    rows = []
    for i in range(n):
        age = "" if i % 17 == 0 else ("NA" if i % 23 == 0 else str(20 + i % 50))
        plan = ["basic", "pro", "family"][i % 3]
        churn = "Yes" if i % 5 == 0 else "No"
        rows.append(f"C{i:05d},{age},{plan},{9.99 + i % 7:.2f},2024-01-{1 + i % 28:02d},note {i},{churn}")
    p = tmp_path / "churn.csv"
    p.write_text(MESSY.format(rows="\n".join(rows)) + "\n")
    return str(p)


def test_infers_roles_task_and_yes_no_label(tmp_path):
    spec = infer_spec(_messy_csv(tmp_path), "churned")
    roles = {c.name: c.role for c in spec.columns}
    assert roles == {"customer_id": "key", "age": "numeric", "plan": "categorical", "monthly_fee": "numeric",
                     "signup_date": "drop", "notes": "drop", "churned": "label"}
    assert spec.task == "binary"
    assert spec.label_classes == ["No", "Yes"]  # [negative, positive]
    assert spec.positive_label == "Yes"
    assert spec.column("plan").max_categories >= 3
    assert spec.feature_columns == ["age", "plan", "monthly_fee"]


def test_positive_label_flag_and_minority_default(tmp_path):
    p = tmp_path / "credit.csv"
    p.write_text("amount,risk\n" + "\n".join(f"{i},{'bad' if i % 4 == 0 else 'good'}" for i in range(100)) + "\n")
    assert infer_spec(str(p), "risk").label_classes == ["good", "bad"]
    assert infer_spec(str(p), "risk", positive_label="good").label_classes == ["bad", "good"]
    with pytest.raises(UserError, match="--positive_label"):
        infer_spec(str(p), "risk", positive_label="ugly")


def test_multiclass_classes_sorted_numerically_from_full_column(tmp_path):
    p = tmp_path / "d.csv"
    # The rare class 10 appears only after the sample: it must still be a class.
    lines = [f"{i % 7},{i % 10}" for i in range(500)] + ["1,10"] * 3
    p.write_text("x,digit\n" + "\n".join(lines) + "\n")
    spec = infer_spec(str(p), "digit", sample_rows=100)
    assert spec.task == "multiclass"
    assert spec.label_classes == [str(i) for i in range(11)]


def test_a_label_value_seen_once_is_a_typo_not_a_class(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("x,y\n" + "\n".join(f"{i},{'Yes' if i % 3 else 'No'}" for i in range(300)) + "\n1,maybe\n")
    spec = infer_spec(str(p), "y")
    assert spec.task == "binary" and spec.label_classes == ["No", "Yes"]


def test_errors_name_the_problem(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="--label: column 'zzz' is not in"):
        infer_spec(str(p), "zzz")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        infer_spec(str(empty), "a")
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(UserError, match="no data rows"):
        infer_spec(str(header_only), "a")
    with pytest.raises(UserError, match="file not found"):
        infer_spec(str(tmp_path / "missing.csv"), "a")


def test_save_load_round_trip_and_validation(tmp_path):
    spec = infer_spec(_messy_csv(tmp_path), "churned")
    path = spec.save(str(tmp_path / "spec.json"))
    again = DatasetSpec.load(path)
    assert again.to_dict() == spec.to_dict()
    bad = spec.to_dict()
    bad["columns"][1]["role"] = "feature"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="column 'age' has role 'feature'"):
        DatasetSpec.load(str(tmp_path / "bad.json"))


def test_mask_value_keeps_last_four():
    assert mask_value("4111111111111111") == "************1111"
    assert mask_value("short") == "*****"
    assert mask_value(None) is None
