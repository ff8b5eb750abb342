"""Serve an exported model online: TF Serving's REST API and Vertex AI's custom-container contract.

    python -m pipelines.serve --model_dir=out/fraud --port=8501
    curl -s -H 'Content-Type: application/json' \\
        -d '{"instances": [{"V1": -1.36, "V2": -0.07, "Amount": 149.62}]}' \\
        http://127.0.0.1:8501/v1/models/model:predict
    # on Vertex AI / Cloud Run: AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE, AIP_STORAGE_URI
    # watch the served instances and scores per window (docs/MONITORING.md)
    python -m pipelines.serve --model_dir=out/fraud --monitor --monitor_topic=fraud-monitor

Serves the newest version under the model root (local or gs://) and picks up
newer ones without a restart; SIGTERM drains requests in flight and exits 0.
See docs/SERVING.md.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.jobs.serve import serve
from beam_ml.options import (CleanOptions, FeatureOptions, KafkaOptions, MonitorOptions, ServeOptions,
                             parse_pipeline_options)

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Parses flags and serves until SIGTERM/SIGINT; returns the exit status.

    Raises:
      UserError: a bad flag or model directory.
    """
    options = parse_pipeline_options(argv, ServeOptions, CleanOptions, FeatureOptions, KafkaOptions,
                                     MonitorOptions, prog="python -m pipelines.serve",
                                     description="Serve an exported model over HTTP (TF Serving REST API, "
                                                 "Vertex AI custom container).")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(options)


def main(argv: Optional[Sequence[str]] = None) -> None:
    sys.exit(cli.main(run, argv))


if __name__ == "__main__":
    main()
