"""Dataflow Flex Template metadata, generated from the pipelines' PipelineOptions classes.

    python -m templates.flex            # rewrites templates/<pipeline>/metadata.json
    python -m templates.flex --check    # exits 1 if a checked-in file is stale

The options classes are the one source of truth for flags: each flag becomes a
template parameter with its help text, so a template launch and a command line
accept exactly the same settings. Build and launch (with gcloud, outside this repo's tests):

    gcloud builds submit --tag "$REGION-docker.pkg.dev/$PROJECT/beam-ml/train" -f templates/Dockerfile .
    gcloud dataflow flex-template build gs://$BUCKET/templates/train.json \\
        --image "$REGION-docker.pkg.dev/$PROJECT/beam-ml/train" --sdk-language PYTHON \\
        --metadata-file templates/train/metadata.json
    gcloud dataflow flex-template run train-$(date +%s) --template-file-gcs-location gs://$BUCKET/templates/train.json \\
        --region $REGION --parameters input=gs://$BUCKET/HR_comma_sep.csv,label_column=left,output_dir=gs://$BUCKET/out/hr
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from beam_ml.options import (KAFKA_TO_BIGQUERY_TEMPLATE_NAMES, BatchPredictOptions, BigQueryOptions, CleanOptions,
                             CsvReadOptions, FeatureOptions, KafkaOptions, KafkaToBigQueryOptions, MonitorOptions,
                             StreamPredictOptions, TrainOptions)

__all__ = ["TEMPLATES", "PARAMETER_NAMES", "metadata_for", "main"]

# pipeline module → (display name, options classes, description)
TEMPLATES = {
    "train": ("beam_ml: train a model from CSV, a Kafka topic or BigQuery",
              [TrainOptions, CsvReadOptions, KafkaOptions, CleanOptions, FeatureOptions],
              "CSV/Kafka/BigQuery → optional --sql → tf.Transform → TFRecords → Keras → SavedModel over raw features."),
    "batch_predict": ("beam_ml: batch predictions",
                      [BatchPredictOptions, CsvReadOptions, KafkaOptions, CleanOptions, FeatureOptions,
                       MonitorOptions],
                      "Scores a CSV file or a bounded topic with an exported model (its --sql statement first); "
                      "predictions to a file, a topic or a BigQuery table."),
    "stream_predict": ("beam_ml: streaming predictions Kafka → Kafka and/or BigQuery",
                       [StreamPredictOptions, KafkaOptions, CleanOptions, FeatureOptions, MonitorOptions],
                       "Kafka JSON events → the model's --sql statement → validate → RunInference → prediction "
                       "events to a topic and/or a BigQuery table; dead letters likewise."),
    "kafka_to_bigquery": ("beam_ml: Kafka to BigQuery",
                          [KafkaToBigQueryOptions, KafkaOptions, BigQueryOptions, CleanOptions],
                          "Kafka topics (JSON, CSV lines or Avro) → optional ksqlDB-style --sql → a BigQuery table; "
                          "records that cannot be written go to a dead-letter table; offsets committed after the "
                          "writes (at least once)."),
}

# Parameters a template names otherwise than the flag (every name here is also accepted as a flag
# alias, beam_ml.options.FLAG_ALIASES): Google's own Kafka-to-BigQuery template names.
PARAMETER_NAMES = {"kafka_to_bigquery": KAFKA_TO_BIGQUERY_TEMPLATE_NAMES}

# Parameters a template must never expose as plain text (secrets belong in --kafka_config).
_SECRET = {"sasl_password", "ssl_password", "schema_registry_user_info"}


def metadata_for(pipeline: str) -> dict:
    """The Flex Template metadata for one pipeline, from its options classes."""
    name, classes, description = TEMPLATES[pipeline]
    renamed = PARAMETER_NAMES.get(pipeline, {})
    params, seen = [], set()
    for cls in classes:
        parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
        cls._add_argparse_args(parser)
        for action in parser._actions:
            flag = next((o for o in action.option_strings if o.startswith("--")), None)
            if not flag:
                continue
            pname = flag[2:]
            if pname in seen or pname in _SECRET:
                continue
            seen.add(pname)
            help_text = (action.help or pname).replace("\n", " ")
            if pname in renamed:
                help_text += f" (flag --{pname})"
                pname = renamed[pname]
            param = {"name": pname, "label": pname.replace("_", " "), "helpText": help_text, "isOptional": True}
            if action.choices:
                param["regexes"] = ["^(" + "|".join(str(c) for c in action.choices) + ")$"]
            params.append(param)
    return {"name": name, "description": description, "parameters": params,
            "sdkInfo": {"language": "PYTHON"}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate Flex Template metadata")
    ap.add_argument("--check", action="store_true", help="fail if a checked-in file differs")
    args = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    stale = []
    for pipeline in TEMPLATES:
        path = os.path.join(here, pipeline, "metadata.json")
        text = json.dumps(metadata_for(pipeline), indent=2) + "\n"
        current = open(path).read() if os.path.exists(path) else None
        if current != text:
            stale.append(path)
            if not args.check:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    for p in stale:
        print(("stale: " if args.check else "wrote: ") + p)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
