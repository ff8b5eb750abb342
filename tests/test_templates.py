"""Flex Template metadata stays generated from the options classes (no drift)."""
from templates import flex


def test_checked_in_metadata_matches_the_options_classes():
    assert flex.main(["--check"]) == 0, "run: python -m templates.flex"


def test_train_template_exposes_flags_and_hides_secrets():
    names = {p["name"] for p in flex.metadata_for("train")["parameters"]}
    assert {"input", "label_column", "output_dir", "epochs", "input_topic", "bootstrap_servers",
            "kafka_config"} <= names
    assert "sasl_password" not in names
