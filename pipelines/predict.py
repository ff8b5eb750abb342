"""Score raw records with an exported model: the "single prediction" use case.

    python -m pipelines.predict --model_dir=out/retention/model \
        --json='{"satisfaction_level": 0.11, "last_evaluation": 0.88, "number_project": 7,
                 "average_montly_hours": 272, "time_spend_company": 4, "Work_accident": 0,
                 "promotion_last_5years": 0, "sales": "sales", "salary": "low"}'
    python -m pipelines.predict --model_dir=out/retention --input=rows.csv

--json takes one JSON object or a list of them; --input a CSV with a header.
Each record prints as one JSON line with its score, class and the model version.
A record that cannot be scored prints its reason instead (and the exit status is 1).
This loads the model in-process (no Beam); use pipelines.batch_predict for files
of any size.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.options import add_shared_argument, parse_pipeline_options

__all__ = ["run", "main", "PredictOptions"]


class PredictOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("beam_ml predict")
        add_shared_argument(g, "--model_dir", help="a model root (model/), a version dir, or a training output_dir")
        add_shared_argument(g, "--json", dest="json_records", help="a JSON object or a list of objects")
        add_shared_argument(g, "--input", help="a CSV file of raw records with a header")


def _records_from_csv(path: str) -> list[dict]:
    import csv

    if not os.path.isfile(path):
        raise UserError(f"--input: file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [dict(r) for r in csv.DictReader(f)]


def run(argv: Optional[Sequence[str]] = None) -> list[dict]:
    """Scores the records; returns one dict per record (a prediction or an error)."""
    opts = parse_pipeline_options(argv, PredictOptions).view_as(PredictOptions)
    if not opts.model_dir:
        raise UserError("--model_dir: required")
    if bool(opts.json_records) == bool(opts.input):
        raise UserError("give exactly one of --json or --input")
    if opts.json_records:
        try:
            records = json.loads(opts.json_records)
        except json.JSONDecodeError as e:
            raise UserError(f"--json: not valid JSON: {e}")
        records = records if isinstance(records, list) else [records]
    else:
        records = _records_from_csv(opts.input)

    from beam_ml.records import validate_record
    from beam_ml.serving import ServingModel

    model = ServingModel.load(opts.model_dir)
    good = [(i, r) for i, r in enumerate(records) if validate_record(r, model.spec) is None]
    preds = dict(zip([i for i, _ in good], model.predict_records([r for _, r in good])))
    results = []
    for i, r in enumerate(records):
        if i in preds:
            p = dict(preds[i])
            if model.task in ("binary", "anomaly"):
                p["threshold"] = model.threshold
            p["model_version"] = model.version
            key = model.spec.key_column
            if key and isinstance(r, dict) and key in r:
                p[key] = r[key]
            results.append(p)
        else:
            results.append({"record": i, "error": validate_record(r, model.spec)})
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    results = cli.main(run, argv)
    for r in results:
        print(json.dumps(r))
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
