"""Score a Kafka stream of events with an exported model; predictions and dead letters to Kafka and/or BigQuery.

    python -m pipelines.stream_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --output_topic=predictions --dead_letter_topic=transactions-dlq \\
        --bootstrap_servers=127.0.0.1:9092 --group_id=scoring --streaming
    # a bounded run (tests, demos): stop after 60 s or 10000 records (in total)
    python -m pipelines.stream_predict ... --max_read_time=60 --max_records=10000
    # predictions into BigQuery (streaming inserts), instead of or besides --output_topic
    python -m pipelines.stream_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --output_table=my-proj:ds.scores --bootstrap_servers=127.0.0.1:9092 --group_id=scoring --streaming
    # watch inputs and scores per 1000 events against the training statistics (docs/MONITORING.md)
    python -m pipelines.stream_predict ... --monitor --monitor_window=1000 --monitor_topic=fraud-monitor \\
        --alert_topic=fraud-alerts

The job, its delivery guarantee and hot reload are described in `beam_ml.jobs.stream_predict`.
Without --group_id nothing is committed: a restart starts again from --start.
"""
from __future__ import annotations

from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.jobs.stream_predict import stream_predict
from beam_ml.options import (CleanOptions, FeatureOptions, KafkaOptions, MonitorOptions, StreamPredictOptions,
                             parse_pipeline_options)

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None):
    """Parses flags and runs `beam_ml.jobs.stream_predict.stream_predict`; returns its StreamPredictRun.

    Raises:
      UserError: a bad flag or model directory.
    """
    options = parse_pipeline_options(argv, StreamPredictOptions, KafkaOptions, CleanOptions, FeatureOptions,
                                     MonitorOptions,
                                     prog="python -m pipelines.stream_predict",
                                     description="Score a Kafka stream with an exported model; predictions and "
                                                 "dead letters to Kafka and/or BigQuery.")

    return stream_predict(options, test_pipeline=test_pipeline)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
