"""Score raw records with an exported model: the "single prediction" use case.

    python -m pipelines.predict --model_dir=out/retention/model \
        --json='{"satisfaction_level": 0.11, "last_evaluation": 0.88, "number_project": 7,
                 "average_montly_hours": 272, "time_spend_company": 4, "Work_accident": 0,
                 "promotion_last_5years": 0, "sales": "sales", "salary": "low"}'
    python -m pipelines.predict --model_dir=out/retention --input=rows.csv
    python -m pipelines.predict --server=http://127.0.0.1:8501 --input=rows.csv   # a running pipelines.serve

--json takes one JSON object or a list of them; --input a CSV with a header.
Each record prints as one JSON line with its score, class and the model version.
A record that cannot be scored prints its reason instead (and the exit status is 1).
This loads the model in-process (no Beam, no Keras, no tf.Transform); with --server it sends the records
to a running model server instead (no TensorFlow here; the server answers a
bad record with one error for the request). Use pipelines.batch_predict for
files of any size.
"""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.flags import PREDICT, check_predict_flags, parse_flags
from beam_ml.records import read_csv_records
from beam_ml.serving import ServingModel, score_records

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None) -> list[dict]:
    """Scores the records; returns one dict per record (a prediction or an error)."""
    # No Beam here (beam_ml.flags, beam_ml.fs's local files): it would cost 1.5-4 s of a one-row answer.
    opts = check_predict_flags(parse_flags(argv, [PREDICT], prog="python -m pipelines.predict",
                                           description="Score JSON or CSV records with an exported model."))
    if opts.json_records:
        try:
            records = json.loads(opts.json_records)
        except json.JSONDecodeError as e:
            raise UserError(f"--json: not valid JSON: {e}")
        records = records if isinstance(records, list) else [records]
    else:
        records = read_csv_records(opts.input)

    if opts.server:
        # deferred: beam_ml.server's package imports aiohttp and the inference stack (~1 s), which scoring here
        # does not need
        from beam_ml.server.client import predict_remote

        return predict_remote(opts.server, records, opts.model_name)
    return score_records(ServingModel.load(opts.model_dir), records)


def main(argv: Optional[Sequence[str]] = None) -> None:
    results = cli.main(run, argv)
    for r in results:
        print(json.dumps(r))
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
