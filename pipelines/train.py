"""Train a model from a CSV file, a Kafka topic, a BigQuery table or query, or a bundled dataset: tf.Transform + Keras + export.

    python -m pipelines.train --runner=DirectRunner                       # bundled 'retention'
    python -m pipelines.train --dataset=fraud --runner=DirectRunner
    python -m pipelines.train --input=HR_comma_sep.csv --label=left --output_dir=out/hr
    python -m pipelines.train --input=data.csv --spec=out/hr/spec.json --output_dir=out/hr2
    python -m pipelines.train --input=big.csv --label=Class --preprocess_only   # TFRecords only
    python -m pipelines.train --input=HR_comma_sep.csv --label=left --tune --cv_folds=5   # grid search + k-fold CV
    python -m pipelines.train --dataset=retention --tune --param_grid='{"hidden_units": ["64,32", ""], "dropout": [0, 0.2]}' \\
        --direct_running_mode=multi_processing --direct_num_workers=2   # trials in 2 processes
    python -m pipelines.train --input_topic=transactions --bootstrap_servers=127.0.0.1:9092 \\
        --label=Class --output_dir=out/fraud_topic        # a bounded snapshot of a topic
    python -m pipelines.train --input_table=my-proj:ds.transactions --label=Class   # a BigQuery table
    python -m pipelines.train --input_query="SELECT * FROM \\`my-proj.ds.tx\\` WHERE amount > 0" --label=Class \\
        --project=my-proj                                  # a standard-SQL query (--bigquery_endpoint: an emulator)

The job itself (spec, Beam preprocessing, Keras training, export, report) is
`beam_ml.jobs.train`; see it for the artifacts written under --output_dir.
"""
from __future__ import annotations

from typing import Optional, Sequence

from typing import TYPE_CHECKING

from beam_ml import cli
from beam_ml.flags import CLEAN, CSV_READ, FEATURES, KAFKA, TRAIN, check_flags

if TYPE_CHECKING:
    from beam_ml.jobs.train import TrainRun

__all__ = ["run", "main"]
_PROG = "python -m pipelines.train"
_DESCRIPTION = "Train a Keras model from CSV, a Kafka topic, a BigQuery table or query, or a bundled dataset."


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> "TrainRun":
    """Parses flags, runs the training pipeline (preprocess, trials, final model, test, report); prints the summary.

    Raises:
      UserError: a bad flag, file or spec, or too many dead-lettered rows.
    """
    # --help, a typo and a malformed value are answered from beam_ml.flags, before Beam is imported.
    argv = check_flags(argv, [TRAIN, CSV_READ, KAFKA, CLEAN, FEATURES], prog=_PROG, description=_DESCRIPTION)
    # Deferred: Beam and the job's modules (2-6 s of imports), once the flags parse clean.
    from beam_ml.jobs.train import train
    from beam_ml.options import (CleanOptions, CsvReadOptions, FeatureOptions, KafkaOptions, TrainOptions,
                                 parse_pipeline_options)

    options = parse_pipeline_options(argv, TrainOptions, CsvReadOptions, KafkaOptions, CleanOptions, FeatureOptions,
                                     prog=_PROG, description=_DESCRIPTION)
    result = train(options, test_pipeline=test_pipeline)
    if result.metrics:
        from beam_ml.training.report import summary_text  # deferred: matplotlib, kept out of --help

        print(summary_text(result.metrics), flush=True)
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
