"""Score a CSV file (or a Kafka topic snapshot) with an exported model: one prediction per row.

    python -m pipelines.batch_predict --model_dir=out/fraud/model --input=new.csv --output=preds.jsonl
    python -m pipelines.batch_predict --model_dir=out/fraud --input='data/*.csv' --output=preds.csv \\
        --dead_letter=preds_dead.jsonl
    python -m pipelines.batch_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --bootstrap_servers=127.0.0.1:9092 --output_topic=scores --dead_letter_topic=transactions-dlq
    python -m pipelines.batch_predict --model_dir=out/fraud --input=new.csv --output_table=my-proj:ds.scores
        # BigQuery (file loads); dead letters -> --dead_letter_table (default <output_table>_error_records)

The job is `beam_ml.jobs.batch_predict`. The run prints `rows in = predictions + dead
letters` and fails if those do not add up.
"""
from __future__ import annotations

from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.jobs.batch_predict import batch_predict
from beam_ml.options import (BatchPredictOptions, CleanOptions, CsvReadOptions, FeatureOptions, KafkaOptions,
                             MonitorOptions, parse_pipeline_options)

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None):
    """Parses flags and runs `beam_ml.jobs.batch_predict.batch_predict`; returns its BatchPredictRun.

    Raises:
      UserError: a bad flag, file or model directory.
    """
    options = parse_pipeline_options(argv, BatchPredictOptions, CsvReadOptions, KafkaOptions, CleanOptions,
                                     FeatureOptions, MonitorOptions, prog="python -m pipelines.batch_predict",
                                     description="Score a CSV file or a Kafka topic snapshot with an exported model.")

    return batch_predict(options, test_pipeline=test_pipeline)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
