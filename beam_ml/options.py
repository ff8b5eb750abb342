"""PipelineOptions subclasses for beam_ml's flags, and strict parsing.

The same options classes define the command-line flags and the Dataflow Flex
Template parameters. Flags are validated once, early, and errors name the flag.
An unknown flag (one that neither beam_ml nor Beam defines) is an error, not a
silent warning: a typo such as --epoch=5 must not train for the default count.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence, Type

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml.errors import UserError

__all__ = ["TrainOptions", "parse_pipeline_options", "parse_int_list", "add_shared_argument"]


def add_shared_argument(group, *args, **kwargs) -> None:
    """Adds a flag unless another options class already did.

    Beam parses every PipelineOptions subclass of the process with one parser,
    so two classes defining the same flag (--input is TrainOptions', PredictOptions'
    and BatchPredictOptions') would clash whenever both modules are imported; the
    flag then keeps its first definition, and `parse_pipeline_options` still
    checks each class's own definition strictly.
    """
    try:
        group.add_argument(*args, **kwargs)
    except argparse.ArgumentError:
        pass


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise UserError(f"{flag}: expected positive integers, got {text!r}")
    return values


class TrainOptions(PipelineOptions):
    """Flags of `python -m pipelines.train`."""

    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("beam_ml training")
        add = lambda *a, **k: add_shared_argument(g, *a, **k)  # noqa: E731
        add("--input", help="CSV file or glob with a header row")
        add("--input_topic", help="train from a bounded snapshot of this Kafka topic (JSON events); "
                                             "with --bootstrap_servers")
        add("--dataset", help="a bundled dataset: retention (default), absenteeism, fraud, digits")
        add("--data_dir", default="data", help="where bundled datasets are written")
        add("--dataset_rows", type=int, default=None, help="rows to generate for a bundled dataset")
        # Beam's GoogleCloudOptions owns --label (an alias of Dataflow's --labels), so
        # the command line's --label is rewritten to --label_column (see FLAG_ALIASES).
        add("--label_column", dest="label", help="the label column (required with --input unless --spec)")
        add("--positive_label", help="binary/anomaly: the positive (anomalous) label value")
        add("--task", choices=["binary", "multiclass", "anomaly"], help="default: from the label")
        add("--spec", help="a dataset spec JSON file (default: inferred and written to output_dir)")
        add("--key_column", help="an id column carried to predictions (default: inferred)")
        add("--drop_columns", default="", help="comma-separated columns to ignore")
        add("--output_dir", help="where artifacts go (default: out/<dataset or input name>)")
        add("--eval_fraction", type=float, default=0.3)
        add("--split_seed", type=int, default=42)
        add("--max_bad_rows_fraction", type=float, default=0.01,
                       help="fail the run when more than this fraction of rows is dead-lettered")
        add("--preprocess_only", action="store_true", help="stop after writing TFRecords")
        add("--hidden_units", default="64,32")
        add("--dropout", type=float, default=0.2)
        add("--optimizer", default="adam", choices=["adam", "sgd", "rmsprop", "adagrad"])
        add("--learning_rate", type=float, default=1e-3)
        add("--batch_size", type=int, default=0,
                       help="rows per step; 0 = auto: train rows / 100, within 32..512")
        add("--epochs", type=int, default=30)
        add("--early_stopping_patience", type=int, default=5)
        add("--class_weights", default="auto", choices=["auto", "balanced", "none"],
                       help="auto: balanced weights when the rarest class is < 1/3 as frequent as the commonest")
        add("--seed", type=int, default=42, help="model initialisation and shuffling seed")
        add("--verbose", type=int, default=2, choices=[0, 1, 2], help="Keras progress display")

    def validate_train(self) -> "TrainOptions":
        if not (self.input or self.dataset or self.input_topic):
            self.dataset = "retention"
        if sum(bool(x) for x in (self.input, self.dataset, self.input_topic)) > 1:
            raise UserError("--input, --dataset and --input_topic are exclusive: give one")
        if not 0.0 < self.eval_fraction < 1.0:
            raise UserError(f"--eval_fraction: expected a value in (0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.max_bad_rows_fraction <= 1.0:
            raise UserError(f"--max_bad_rows_fraction: expected a value in [0, 1], got {self.max_bad_rows_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout: expected a value in [0, 1), got {self.dropout}")
        if self.batch_size < 0:
            raise UserError(f"--batch_size: expected >= 0 (0 = auto), got {self.batch_size}")
        for flag in ("learning_rate", "epochs"):
            if getattr(self, flag) <= 0:
                raise UserError(f"--{flag}: expected a positive value, got {getattr(self, flag)}")
        if self.early_stopping_patience < 0:
            raise UserError(f"--early_stopping_patience: expected >= 0, got {self.early_stopping_patience}")
        parse_int_list(self.hidden_units, "--hidden_units")
        return self


# Flags whose natural name Beam already uses for something else.
FLAG_ALIASES = {"--label": "--label_column"}


def _apply_aliases(argv: Sequence[str]) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(FLAG_ALIASES[name] + eq + value if name in FLAG_ALIASES else arg)
    return out


class _ErrorRaisingParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit(2)
        raise UserError(message)


def _all_option_classes() -> list[Type[PipelineOptions]]:
    seen, stack = [], [PipelineOptions]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def parse_pipeline_options(argv: Optional[Sequence[str]], *option_classes: Type[PipelineOptions]) -> PipelineOptions:
    """Parses argv into PipelineOptions, rejecting flags no options class defines.

    Args:
      argv: the command line (without the program name).
      option_classes: beam_ml options classes that must be registered (imported).

    Returns:
      The PipelineOptions; view it as each class with `.view_as(cls)`.

    Raises:
      UserError: naming the unknown or malformed flag.
    """
    argv = _apply_aliases(argv or [])
    # 'resolve': several options classes may define the same flag (Beam's own do).
    parser = _ErrorRaisingParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    for cls in _all_option_classes():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(argv)
    flags = [u for u in unknown if u.startswith("-")]
    if flags:
        raise UserError(f"unknown flag {flags[0].split('=')[0]} (see --help)")
    if unknown:
        raise UserError(f"unexpected argument {unknown[0]!r}: flags look like --name=value")
    # Parse each of our classes strictly so a bad value names its flag.
    for cls in option_classes:
        p = _ErrorRaisingParser(allow_abbrev=False, add_help=False)
        cls._add_argparse_args(p)
        p.parse_known_args(argv)
    return PipelineOptions(argv)
