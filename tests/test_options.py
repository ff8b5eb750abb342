"""Flags: declared once, strict parsing, one-line errors, --help on every pipeline."""
import importlib

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml.errors import UserError
from beam_ml.options import (BatchPredictOptions, FlagConflict, KafkaOptions, PredictOptions, ProduceOptions,
                             StreamPredictOptions, TrainOptions, declared_flags, flag, parse_pipeline_options)

PIPELINES = ["train", "predict", "batch_predict", "stream_predict", "produce", "stream_demo"]


@pytest.mark.parametrize("name", PIPELINES)
def test_help_prints_usage_and_exits_0(name, capsys):
    module = importlib.import_module(f"pipelines.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.run(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m pipelines.{name}")
    assert "--" in out


def test_help_lists_beam_ml_flags_first_grouped_with_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_pipeline_options(["--help"], TrainOptions, KafkaOptions, prog="python -m pipelines.train")
    out = capsys.readouterr().out
    ours, kafka, beam = (out.index("beam_ml training:"), out.index("beam_ml Kafka connection:"),
                         out.index("Beam: StandardOptions:"))
    assert ours < kafka < beam
    assert "--epochs EPOCHS" in out and "(default: auto)" in out  # --hidden_units; --epochs 0 = auto
    # A flag without a real default shows none (not "default: None").
    assert "(default: None)" not in out and "(default: False)" not in out


def test_same_declaration_twice_is_fine_a_different_one_fails():
    assert flag("epochs", **declared_flags()["epochs"]) == "epochs"
    with pytest.raises(FlagConflict, match="--epochs is declared twice"):
        flag("epochs", type=int, default=10, help="other meaning")
    assert declared_flags()["epochs"]["default"] == 0  # auto (families.mlp.default_network)


def test_every_flag_an_options_class_lists_is_declared():
    for cls in (TrainOptions, PredictOptions, BatchPredictOptions, StreamPredictOptions, ProduceOptions,
                KafkaOptions):
        assert set(cls.FLAGS) <= set(declared_flags()), cls.__name__


def test_shared_flags_have_one_default_across_pipelines():
    options = PipelineOptions([])
    assert options.view_as(BatchPredictOptions).max_batch_size == 256
    assert options.view_as(StreamPredictOptions).max_batch_size == 256
    assert options.view_as(StreamPredictOptions).group_id is None
    # Shared with Beam's KafkaStreamsRunnerOptions, with Beam's default.
    assert options.get_all_options()["bootstrap_servers"] == "localhost:9092"


def test_unknown_and_malformed_flags_are_named():
    with pytest.raises(UserError, match="unknown flag --epoch "):
        parse_pipeline_options(["--epoch=5"], TrainOptions)
    with pytest.raises(UserError, match="argument --epochs: invalid int value: 'five'"):
        parse_pipeline_options(["--epochs=five"], TrainOptions)
    with pytest.raises(UserError, match="unexpected argument 'data.csv'"):
        parse_pipeline_options(["data.csv"], TrainOptions)


def test_label_is_an_alias_of_label_column_and_beam_flags_pass():
    options = parse_pipeline_options(["--label=left", "--runner=DirectRunner", "--labels=team=ml"], TrainOptions)
    assert options.view_as(TrainOptions).label == "left"
    assert options.get_all_options()["runner"] == "DirectRunner"


@pytest.mark.parametrize("argv, message", [
    (["--input=a.csv", "--dataset=fraud"], "exclusive"),
    (["--input=a.csv"], "--label: required with --input"),
    (["--input_topic=t"], "--label: required with --input_topic"),
    (["--test_fraction=1.5"], "--test_fraction"),
    (["--dropout=1"], "--dropout"),
    (["--hidden_units=64,x"], "--hidden_units"),
    (["--dataset_rows=0"], "--dataset_rows"),
])
def test_train_validation_names_the_flag(argv, message):
    with pytest.raises(UserError, match=message):
        parse_pipeline_options(argv, TrainOptions).view_as(TrainOptions).validated()
