"""Score a CSV file (or a Kafka topic snapshot) with an exported model: one prediction per row.

    python -m pipelines.batch_predict --model_dir=out/fraud/model --input=new.csv --output=preds.jsonl
    python -m pipelines.batch_predict --model_dir=out/fraud --input='data/*.csv' --output=preds.csv \\
        --dead_letter=preds_dead.jsonl
    python -m pipelines.batch_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --bootstrap_servers=127.0.0.1:9092 --output_topic=scores --dead_letter_topic=transactions-dlq

CSV input is read with the spec of the served model version (`ReadCsvBatches`,
no label needed); when the file has the label column anyway it is copied to
the output, for evaluation. A Kafka input is read as a bounded snapshot of JSON
events (as `pipelines.produce` writes them). Each output record names the row
(the spec's key column, else the source line or Kafka offset), its score,
class, the threshold and the model version. Rows that cannot be scored go to
the dead letters with the reason; the run prints `rows in = predictions + dead
letters` and fails if those do not add up.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.io.kafka_config import KafkaOptions
from beam_ml.options import add_shared_argument, parse_pipeline_options

__all__ = ["BatchPredictOptions", "BatchPredictRun", "build_batch_predict", "run", "main"]


class BatchPredictOptions(PipelineOptions):
    """Flags of `python -m pipelines.batch_predict` (Kafka connection flags: KafkaOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("beam_ml batch prediction")
        add = lambda *a, **k: add_shared_argument(g, *a, **k)  # noqa: E731
        add("--model_dir", help="model root (latest version served), train output dir, or version dir")
        add("--input", help="CSV file or glob with a header row")
        add("--input_topic", help="Kafka topic of JSON events, read as a bounded snapshot")
        add("--value_format", default="json", choices=["json", "csv"],
            help="topic event values: json objects, or csv lines with the model spec's columns in order")
        add("--group_id", default=None,
            help="Kafka consumer group: resume from its committed offsets and commit after")
        add("--output", help="predictions file: .jsonl (or .json) or .csv")
        add("--output_topic", help="Kafka topic for predictions (JSON)")
        add("--dead_letter", default=None,
            help="dead-letter file (JSON lines); default <output>.dead_letter.jsonl")
        add("--dead_letter_topic", default=None, help="Kafka topic for dead letters")
        add("--min_batch_size", type=int, default=1)
        add("--max_batch_size", type=int, default=512)

    def validate_batch_predict(self) -> "BatchPredictOptions":
        if not self.model_dir:
            raise UserError("--model_dir: required (e.g. out/fraud/model)")
        if bool(self.input) == bool(self.input_topic):
            raise UserError("--input or --input_topic: give exactly one")
        if bool(self.output) == bool(self.output_topic):
            raise UserError("--output or --output_topic: give exactly one")
        if self.output and not self.output.lower().endswith((".jsonl", ".json", ".csv")):
            raise UserError(f"--output: expected a .jsonl or .csv file name, got {self.output}")
        if self.dead_letter and self.dead_letter_topic:
            raise UserError("--dead_letter and --dead_letter_topic are exclusive: give one")
        if self.output_topic and not (self.dead_letter or self.dead_letter_topic):
            raise UserError("--dead_letter or --dead_letter_topic: required with --output_topic")
        if self.group_id and not self.input_topic:
            raise UserError("--group_id: only applies to --input_topic")
        if self.min_batch_size < 1 or self.max_batch_size < self.min_batch_size:
            raise UserError(f"--min_batch_size/--max_batch_size: expected 1 <= min <= max, "
                            f"got {self.min_batch_size}, {self.max_batch_size}")
        if not os.path.exists(self.model_dir):
            raise UserError(f"--model_dir: not found: {self.model_dir}")
        return self

    def dead_letter_path(self) -> Optional[str]:
        if self.dead_letter or self.dead_letter_topic:
            return self.dead_letter
        return os.path.splitext(self.output)[0] + ".dead_letter.jsonl"


@dataclasses.dataclass
class BatchPredictRun:
    """What a run produced: the row accounting and where the outputs went."""

    counts: dict
    output: str
    dead_letter: str
    pipeline_result: object = None


def _read_spec(spec, header: Sequence[str]):
    """The spec to read prediction input with: the label, when present, as a plain string column.

    A 'categorical' role carries the label through the reader untouched (no
    check against label_classes), so rows with an unknown or missing label are
    still scored.
    """
    from beam_ml.spec import ColumnSpec

    columns = []
    for c in spec.columns:
        if c.role == "label" and c.name in header:
            columns.append(ColumnSpec(c.name, "categorical", max_categories=1))
        elif c.role == "label" or (c.role in ("key", "mask") and c.name not in header):
            columns.append(ColumnSpec(c.name, "drop"))
        else:
            columns.append(c)
    return dataclasses.replace(spec, columns=columns)


def batch_to_rows(batch, spec, source: str, with_label: bool):
    """Yields (RowRef, row) for each row of a ReadCsvBatches RecordBatch.

    Missing numerics (NaN) and categoricals ("") become None; the label (if
    read) goes into the RowRef's carried fields, the key into its id.
    """
    import numpy as np

    from beam_ml.inference import RowRef
    from beam_ml.io.batches import LINE_COLUMN

    n = batch.num_rows
    columns = {}
    for name in spec.numeric_columns:
        values = batch.column(name).flatten().to_numpy(zero_copy_only=False).astype(float)
        columns[name] = [None if np.isnan(v) else float(v) for v in values]
    for name in spec.categorical_columns:
        columns[name] = [v.decode("utf-8", "replace") or None for v in batch.column(name).flatten().to_pylist()]
    labels = ([v.decode("utf-8", "replace") or None for v in batch.column(spec.label).flatten().to_pylist()]
              if with_label else None)
    keys = batch.column(spec.key_column).to_pylist() if spec.key_column and \
        spec.key_column in batch.schema.names else None
    lines = batch.column(LINE_COLUMN).to_pylist()
    names = list(columns)
    for i in range(n):
        row = {name: columns[name][i] for name in names}
        carry = ((spec.label, labels[i]),) if labels is not None else ()
        yield RowRef(source, int(lines[i]), keys[i] if keys else None, carry), row


def _csv_header(id_name: str, label: Optional[str], classes: Sequence[str], task: str) -> list[str]:
    header = [id_name] if id_name != "line" else []
    header += ["source", "line", "score", "class", "class_id", "threshold", "model_version"]
    if task == "multiclass":
        header += [f"p_{c}" for c in classes]
    if label:
        header.append(label)
    return header


def _csv_line(record: dict, header: Sequence[str]) -> str:
    import csv
    import io

    values = dict(record)
    values["line"] = record.get("position")
    for i, p in enumerate(record.get("probabilities") or []):
        values[header[header.index("model_version") + 1 + i]] = p
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if values.get(h) is None else values.get(h) for h in header])
    return out.getvalue()


def build_batch_predict(pipeline, options: PipelineOptions) -> dict:
    """Adds the batch-prediction steps to `pipeline`.

    Args:
      pipeline: a beam.Pipeline (or TestPipeline).
      options: parsed options with BatchPredictOptions (and KafkaOptions) flags.

    Returns:
      {'predictions': PCollection[dict], 'dead_letters': PCollection[DeadLetter],
       'model_version_dir': str, 'id_name': str}.
    """
    import apache_beam as beam

    from beam_ml.inference import (DEAD_TAG, PREDICT_NAMESPACE, CountDeadLetters, ParseEventsFn,
                                   RunInferenceWithDeadLetters, ServingModelHandler, ValidateRowsFn,
                                   load_model_metadata, prediction_record)

    opts = options.view_as(BatchPredictOptions)
    version_dir, _, spec = load_model_metadata(opts.model_dir)
    # Pinned to the version found now: a batch run scores every row with one model.
    handler = ServingModelHandler(version_dir, min_batch_size=opts.min_batch_size,
                                  max_batch_size=opts.max_batch_size)
    dead_parts = []
    with_label = False
    if opts.input:
        from beam_ml.io.csv import ReadCsvBatches, expand_input
        from beam_ml.spec import read_header

        files = expand_input(opts.input)
        header = read_header(files[0])
        with_label = spec.label in header
        read_spec = _read_spec(spec, header)
        row_parts = []
        # One read per file: ReadCsvBatches' batches do not name their file, and
        # a row's line number means nothing without it.
        for i, path in enumerate(files):
            suffix = "" if len(files) == 1 else str(i)
            read = pipeline | f"ReadCsv{suffix}" >> ReadCsvBatches(path, read_spec, with_label=False)
            row_parts.append(read.rows | f"ToRows{suffix}" >> beam.FlatMap(batch_to_rows, spec, path, with_label))
            dead_parts.append(read[DEAD_TAG])
        rows = row_parts[0] if len(row_parts) == 1 else row_parts | "FlattenRows" >> beam.Flatten()
        id_name = spec.key_column or "line"
    else:
        from beam_ml.io.kafka import ReadFromKafka

        kafka = options.view_as(KafkaOptions)
        records = pipeline | "ReadFromKafka" >> ReadFromKafka(
            None, opts.input_topic, group_id=opts.group_id, start="committed" if opts.group_id else "earliest",
            bounded=True, client_config=kafka.client_config())
        parsed = records | "ParseEvents" >> beam.ParDo(
            ParseEventsFn(spec, value_format=opts.value_format)).with_outputs(DEAD_TAG, main="rows")
        valid = parsed.rows | "Validate" >> beam.ParDo(ValidateRowsFn(spec)).with_outputs(DEAD_TAG, main="rows")
        rows = valid.rows
        dead_parts += [parsed[DEAD_TAG], valid[DEAD_TAG]]
        id_name = "event_id"

    predictions, inference_dead = rows | "RunInference" >> RunInferenceWithDeadLetters(
        handler, mask_columns=spec.mask_columns)
    dead_parts.extend(inference_dead)

    counter = beam.metrics.Metrics.counter(PREDICT_NAMESPACE, "predictions")

    def to_record(element):
        counter.inc()
        return prediction_record(element[0], element[1], id_name)

    records_out = predictions | "FormatPredictions" >> beam.Map(to_record)
    dead = (dead_parts | "FlattenDeadLetters" >> beam.Flatten()
            | "CountDeadLetters" >> beam.ParDo(CountDeadLetters()))
    return {"predictions": records_out, "dead_letters": dead, "model_version_dir": version_dir,
            "id_name": id_name, "spec": spec,
            "with_label": with_label}


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> BatchPredictRun:
    """Parses flags, scores every input row, writes predictions and dead letters, checks the counts.

    Args:
      argv: command-line flags (beam_ml's and Beam's).
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.

    Returns:
      A BatchPredictRun with counts {rows_in, predictions, dead_letters, ...}.

    Raises:
      UserError: a bad flag, file or model directory.
    """
    options = parse_pipeline_options(argv, BatchPredictOptions, KafkaOptions)
    opts = options.view_as(BatchPredictOptions).validate_batch_predict()
    if opts.input_topic or opts.output_topic or opts.dead_letter_topic:
        try:
            options.view_as(KafkaOptions).client_config()
        except ValueError as e:
            raise UserError(str(e))

    import apache_beam as beam

    from beam_ml.inference import PREDICT_NAMESPACE
    from beam_ml.metrics import query_counter

    pipeline = test_pipeline or beam.Pipeline(options=options)
    built = build_batch_predict(pipeline, options)
    spec, id_name = built["spec"], built["id_name"]
    dead_path = opts.dead_letter_path()
    kafka_config = options.view_as(KafkaOptions).client_config() if (opts.output_topic or opts.dead_letter_topic) \
        else None

    if opts.output:
        if opts.output.lower().endswith(".csv"):
            header = _csv_header(id_name, spec.label if built["with_label"] else None, spec.label_classes,
                                 spec.task)
            lines = built["predictions"] | "ToCsv" >> beam.Map(_csv_line, header)
            _ = lines | "WritePredictions" >> beam.io.WriteToText(
                opts.output, shard_name_template="", header=",".join(header))
        else:
            _ = (built["predictions"] | "ToJson" >> beam.Map(json.dumps)
                 | "WritePredictions" >> beam.io.WriteToText(opts.output, shard_name_template=""))
    else:
        from beam_ml.io.kafka import WriteToKafka

        _ = (built["predictions"]
             | "EncodePredictions" >> beam.Map(
                 lambda r: (None if r.get(id_name) is None else str(r[id_name]).encode("utf-8"),
                            json.dumps(r).encode("utf-8")))
             | "WriteToKafka" >> WriteToKafka(None, opts.output_topic, client_config=kafka_config))
    dead_json = built["dead_letters"] | "DeadLetterJson" >> beam.Map(lambda d: d.to_json())
    if dead_path:
        _ = dead_json | "WriteDeadLetters" >> beam.io.WriteToText(dead_path, shard_name_template="")
    else:
        from beam_ml.io.kafka import WriteToKafka

        _ = (dead_json | "EncodeDeadLetters" >> beam.Map(lambda s: (None, s.encode("utf-8")))
             | "WriteDeadLetters" >> WriteToKafka(None, opts.dead_letter_topic, client_config=kafka_config))

    result = pipeline.run()
    result.wait_until_finish()
    from beam_ml.metrics import READ

    rows_in = (query_counter(result, READ, "lines_in") if opts.input
               else query_counter(result, PREDICT_NAMESPACE, "rows_in"))
    counts = {"rows_in": rows_in,
              "predictions": query_counter(result, PREDICT_NAMESPACE, "predictions"),
              "dead_letters": query_counter(result, PREDICT_NAMESPACE, "dead_letters")}
    for stage in ("parse", "validate", "inference"):
        counts[f"dead_{stage}"] = query_counter(result, PREDICT_NAMESPACE, f"dead_{stage}")
    output = opts.output or f"kafka:{opts.output_topic}"
    dead_where = dead_path or f"kafka:{opts.dead_letter_topic}"
    print(f"[beam_ml] {counts['rows_in']} rows in = {counts['predictions']} predictions + "
          f"{counts['dead_letters']} dead letters (parse {counts['dead_parse']}, validate "
          f"{counts['dead_validate']}, inference {counts['dead_inference']}); model "
          f"{built['model_version_dir']} -> {output}, dead letters -> {dead_where}", flush=True)
    if counts["rows_in"] != counts["predictions"] + counts["dead_letters"]:
        raise RuntimeError(f"row accounting broken: {counts}")
    return BatchPredictRun(counts=counts, output=output, dead_letter=dead_where, pipeline_result=result)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
