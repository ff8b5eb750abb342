"""The dataset spec: one JSON file that names each column's role and the task.

Every stage reads the same spec — the CSV reader, the tf.Transform
preprocessing_fn, training, export and batch/stream serving — so training and
serving cannot drift apart. It is inferred from a CSV header plus a sample and
written to the output directory for the user to edit and pass back with --spec.

    python -m pipelines.train --input=HR_comma_sep.csv --label=left --output_dir=out/hr
    # edit out/hr/spec.json, then
    python -m pipelines.train --input=HR_comma_sep.csv --spec=out/hr/spec.json --output_dir=out/hr2

Column roles:
  numeric      z-scored; missing values become `default`, or the train-split mean.
  categorical  vocabulary + one-hot with an out-of-vocabulary bucket, at most
               `max_categories` values; missing values become `default` or OOV.
  label        the target; its values are `label_classes`.
  key          an id carried through to predictions, never a feature.
  drop         ignored.
  mask         PII: never a feature, masked wherever it is echoed (dead letters).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from beam_ml import fs
from beam_ml.errors import UserError
from beam_ml.formats.base import cell_text
from beam_ml.io.csv_lines import CorruptData, parse_records, read_chunks, read_header_info
from beam_ml.io.dialect import Dialect, detect_dialect
from beam_ml.io.files import open_file

__all__ = [
    "ColumnSpec",
    "DatasetSpec",
    "ROLES",
    "TASKS",
    "infer_spec",
    "infer_spec_from_rows",
    "infer_spec_from_table",
    "read_header",
    "mask_value",
]

ROLES = ("numeric", "categorical", "label", "key", "drop", "mask")
TASKS = ("binary", "multiclass", "anomaly")
SPEC_VERSION = 1

# Tokens read as a missing value, in any column.
DEFAULT_NA_VALUES = ("", "NA", "N/A", "na", "n/a", "NaN", "nan", "null", "NULL", "None", "?")

# A number as written in CSV files (no thousands separators).
NUMBER_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"

# Label values read as "the positive class" when --positive_label is not given.
_POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "positive", "pos", "bad", "fraud", "churn", "left", "anomaly")
_ID_NAME_RE = re.compile(r"(^id$|_id$|^id_|uuid|guid|^key$|identifier)", re.IGNORECASE)
_DATE_RE = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
_MAX_CATEGORIES_CAP = 200
_SAMPLE_CHUNK_BYTES = 4 << 20


@dataclasses.dataclass
class ColumnSpec:
    """One CSV column.

    Attributes:
      name: the header name.
      role: one of ROLES.
      default: value used where the cell is missing (IFNULL); None means the
        train mean (numeric) or the OOV bucket (categorical).
      max_categories: categorical only: the one-hot width is max_categories + 1
        (the +1 is the OOV bucket); rarer values share the OOV bucket.
    """

    name: str
    role: str
    default: Any = None
    max_categories: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "role": self.role}
        if self.default is not None:
            d["default"] = self.default
        if self.max_categories is not None:
            d["max_categories"] = self.max_categories
        return d


@dataclasses.dataclass
class DatasetSpec:
    """Column roles and the task for one dataset.

    Attributes:
      columns: every CSV column, in file order.
      task: one of TASKS.
      label: the label column name (required for every task; for anomaly it
        is used to pick the threshold and to evaluate).
      label_classes: label values in class-index order. Binary and anomaly:
        [negative, positive]. Values outside this list are dead-lettered.
      na_values: cell texts that mean "missing".
      dialect: how the CSV files are written (delimiter, quoting, encoding,
        compression), detected when the spec was inferred; every read uses it.
        Specs written before it existed load with the default (comma, UTF-8).
      cleaning: the --sql statement training applied to the input before these
        columns existed (`beam_ml.jobs.sql.cleaning_record`: its text,
        the events schema, the lookups' names, keys, schemas and sources), or
        None. Serving applies the same statement by default. Absent in specs
        of runs without --sql (and in older specs).
    """

    columns: list[ColumnSpec]
    task: str
    label: str
    label_classes: list[str]
    na_values: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_NA_VALUES))
    version: int = SPEC_VERSION
    dialect: Dialect = dataclasses.field(default_factory=Dialect)
    cleaning: Optional[dict] = None

    # ----------------------------------------------------------------- views
    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def _names(self, role: str) -> list[str]:
        return [c.name for c in self.columns if c.role == role]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric_columns(self) -> list[str]:
        return self._names("numeric")

    @property
    def categorical_columns(self) -> list[str]:
        return self._names("categorical")

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs, in file order."""
        return [c.name for c in self.columns if c.role in ("numeric", "categorical")]

    @property
    def key_column(self) -> Optional[str]:
        keys = self._names("key")
        return keys[0] if keys else None

    @property
    def mask_columns(self) -> list[str]:
        return self._names("mask")

    @property
    def positive_label(self) -> Optional[str]:
        return self.label_classes[1] if self.task in ("binary", "anomaly") else None

    @property
    def num_classes(self) -> int:
        return len(self.label_classes)

    # ------------------------------------------------------------ validation
    def validate(self, source: str = "spec") -> "DatasetSpec":
        """Checks the spec is usable; raises UserError naming the problem."""
        seen = set()
        for c in self.columns:
            if c.role not in ROLES:
                raise UserError(f"{source}: column '{c.name}' has role '{c.role}'; expected one of {', '.join(ROLES)}")
            if c.name in seen:
                raise UserError(f"{source}: column '{c.name}' appears twice")
            seen.add(c.name)
            if c.role == "numeric" and c.default is not None:
                try:
                    c.default = float(c.default)
                except (TypeError, ValueError):
                    raise UserError(f"{source}: numeric column '{c.name}' has non-numeric default {c.default!r}")
            if c.role == "categorical":
                if c.default is not None:
                    c.default = str(c.default)
                if not c.max_categories or int(c.max_categories) < 1:
                    raise UserError(f"{source}: categorical column '{c.name}' needs max_categories >= 1")
                c.max_categories = int(c.max_categories)
        if self.task not in TASKS:
            raise UserError(f"{source}: task '{self.task}' is not one of {', '.join(TASKS)}")
        labels = self._names("label")
        if labels != [self.label]:
            raise UserError(f"{source}: exactly one column must have role 'label' and be named by 'label' "
                            f"(label={self.label!r}, label columns={labels})")
        if not self.feature_columns:
            raise UserError(f"{source}: no numeric or categorical feature columns")
        if len(self.label_classes) < 2 or len(set(self.label_classes)) != len(self.label_classes):
            raise UserError(f"{source}: label_classes must list at least two distinct values, got {self.label_classes}")
        if self.task in ("binary", "anomaly") and len(self.label_classes) != 2:
            raise UserError(f"{source}: task '{self.task}' needs exactly two label_classes "
                            f"[negative, positive], got {self.label_classes}")
        self.label_classes = [str(v) for v in self.label_classes]
        return self

    # ------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "task": self.task,
            "label": self.label,
            "label_classes": list(self.label_classes),
            "na_values": list(self.na_values),
            "dialect": self.dialect.to_dict(),
            "columns": [c.to_dict() for c in self.columns],
            **({"cleaning": self.cleaning} if self.cleaning else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "spec") -> "DatasetSpec":
        try:
            columns = [ColumnSpec(name=c["name"], role=c["role"], default=c.get("default"),
                                  max_categories=c.get("max_categories")) for c in d["columns"]]
            spec = cls(columns=columns, task=d["task"], label=d["label"],
                       label_classes=list(d["label_classes"]),
                       na_values=list(d.get("na_values", DEFAULT_NA_VALUES)),
                       version=int(d.get("version", SPEC_VERSION)),
                       dialect=Dialect.from_dict(d.get("dialect")), cleaning=d.get("cleaning") or None)
        except (KeyError, TypeError) as e:
            raise UserError(f"{source}: malformed spec, missing or wrong field {e}")
        except UserError as e:
            raise UserError(f"{source}: dialect: {e}")
        return spec.validate(source)

    def save(self, path: str) -> str:
        """Writes the spec as JSON (atomically; local or gs://); returns `path`."""
        fs.write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str) -> "DatasetSpec":
        """Reads a spec written by `save` (or by hand); raises UserError naming --spec."""
        if not fs.is_file(path):
            raise UserError(f"--spec: file not found: {path}")
        try:
            d = json.loads(fs.read_text(path))
        except json.JSONDecodeError as e:
            raise UserError(f"--spec: {path} is not valid JSON: {e}")
        return cls.from_dict(d, source=path)


def mask_value(value: Optional[str]) -> Optional[str]:
    """Masks PII, keeping the last 4 characters (like a card number on a receipt)."""
    if value is None:
        return None
    s = str(value)
    keep = 4 if len(s) > 8 else 0
    return "*" * (len(s) - keep) + (s[-keep:] if keep else "")


def read_header(path: str, dialect: Optional[Dialect] = None) -> list[str]:
    """Returns a CSV file's column names (any Beam filesystem, compressed or not).

    Args:
      path: the file.
      dialect: how it is written; default: detected from the file.

    Raises:
      UserError: for missing, empty or unreadable files and malformed headers.
    """
    return read_header_info(path, dialect or detect_dialect(path)).names


def _read_strings(path: str, header: Sequence[str], na_values: Sequence[str],
                  max_rows: Optional[int], columns: Optional[Sequence[str]] = None,
                  dialect: Optional[Dialect] = None) -> pa.Table:
    """Reads (a sample of) a CSV as string columns, skipping malformed rows, through the reader's parser."""
    dialect = dialect or Dialect()
    cols = list(columns) if columns else list(header)
    info = read_header_info(path, dialect)

    def parse(data: bytes, line: int, final: bool):
        recs = parse_records(data, line, header, dialect, na_values, columns=cols, final=final)
        return recs.table, recs.consumed_lines

    tables, n = [], 0
    with open_file(path, dialect.compression) as f:
        f.seek(info.data_start)
        try:
            for table in read_chunks(f, info.first_line, parse, multiline=dialect.multiline,
                                     chunk_bytes=_SAMPLE_CHUNK_BYTES, source=path):
                tables.append(table)
                n += table.num_rows
                if max_rows is not None and n >= max_rows:
                    break
        except CorruptData:
            pass  # a truncated compressed file: infer from what can be read (the reader dead-letters the rest)
    if not tables:
        return pa.table({h: pa.array([], pa.string()) for h in cols})
    table = pa.concat_tables(tables)
    return table.slice(0, max_rows) if max_rows is not None else table


def _numeric_fraction(col: pa.ChunkedArray) -> float:
    present = col.drop_null()
    if len(present) == 0:
        return 0.0
    ok = pc.sum(pc.match_substring_regex(present, NUMBER_RE)).as_py() or 0
    return ok / len(present)


def _sort_classes(values: Iterable[str]) -> list[str]:
    values = list(values)
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _choose_positive(classes: list[str], counts: dict[str, int]) -> str:
    for word in _POSITIVE_WORDS:
        for c in classes:
            if c.strip().lower() == word:
                return c
    return min(classes, key=lambda c: (counts.get(c, 0), c))  # the minority class


def infer_spec(path: str, label: str, positive_label: Optional[str] = None, task: Optional[str] = None,
               sample_rows: int = 20000, key: Optional[str] = None,
               drop: Sequence[str] = (), na_values: Sequence[str] = DEFAULT_NA_VALUES, *,
               delimiter: Optional[str] = None, encoding: Optional[str] = None,
               compression: Optional[str] = None, multiline: Optional[bool] = None) -> DatasetSpec:
    """Infers a DatasetSpec from a CSV header, a sample of rows and the full label column.

    The file's dialect (delimiter, quoted line breaks) is detected from its
    header and first megabyte unless given, and stored in the spec.

    Args:
      path: the CSV file (any Beam filesystem; compressed by extension or `compression`).
      label: the label column (required; its absence is a UserError).
      positive_label: binary/anomaly: the positive (or anomalous) class.
        Default: a yes/1/true-like value, else the minority class.
      task: force 'binary', 'multiclass' or 'anomaly'; default from the label.
      sample_rows: rows read to decide column roles.
      key: force this column to be the key.
      drop: columns to drop.
      na_values: cell texts read as missing.
      delimiter, encoding, compression, multiline: the dialect, where not to
        be detected (--delimiter, --encoding, --compression).

    Returns:
      A validated DatasetSpec.
    """
    dialect = detect_dialect(path, delimiter=delimiter, encoding=encoding, compression=compression,
                             multiline=multiline)
    header = read_header(path, dialect)
    if label not in header:
        raise UserError(f"--label: column '{label}' is not in {path} (columns: {', '.join(header)})")
    for name, flag in [(key, "--key_column")] + [(d, "--drop_columns") for d in drop]:
        if name and name not in header:
            raise UserError(f"{flag}: column '{name}' is not in {path}")
    sample = _read_strings(path, header, na_values, sample_rows, dialect=dialect)
    if sample.num_rows == 0:
        raise UserError(f"--input: {path} has a header but no data rows")
    # Classes come from the full label column, so rare classes are not missed.
    labels = _read_strings(path, header, na_values, None, columns=[label], dialect=dialect).column(label)
    return _infer(header, sample, labels, label, path, positive_label=positive_label, task=task, key=key,
                  drop=drop, na_values=na_values, dialect=dialect)


def infer_spec_from_rows(rows: Sequence[Mapping[str, Any]], label: str, source: str,
                         hints: Optional[Mapping[str, str]] = None, columns: Optional[Sequence[str]] = None,
                         positive_label: Optional[str] = None, task: Optional[str] = None, key: Optional[str] = None,
                         drop: Sequence[str] = (), na_values: Sequence[str] = DEFAULT_NA_VALUES) -> DatasetSpec:
    """Infers a DatasetSpec from decoded records (Kafka events, BigQuery rows), by the rules `infer_spec` uses.

    Args:
      rows: the sampled records (dicts); the label's classes come from them.
      label: the label field.
      source: what they came from, for errors ("topic transactions").
      hints: field -> 'numeric' (a number by its type: always numeric, booleans as 1/0), 'text' (never
        numeric: categorical or dropped by its values), 'drop', or absent (decided from the values,
        as for a CSV file). Schema'd sources give them (`beam_ml.formats.avro_type_hints`).
      columns: the fields, in order (default: every field seen, in first-seen order).
      positive_label, task, key, drop, na_values: as for `infer_spec`.
    """
    hints = dict(hints or {})
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    if label not in columns:
        raise UserError(f"--label: field '{label}' is not in {source} (fields: {', '.join(columns)})")
    for name, flag in [(key, "--key_column")] + [(d, "--drop_columns") for d in drop]:
        if name and name not in columns:
            raise UserError(f"{flag}: field '{name}' is not in {source}")
    if not rows:
        raise UserError(f"{source}: no records to infer a dataset spec from")
    na = frozenset(na_values)
    arrays = {}
    for name in columns:
        numeric = hints.get(name) == "numeric" and name != label
        cells = [None if v is None else cell_text(v, numeric) for v in (r.get(name) for r in rows)]
        arrays[name] = pa.array([None if c is None or c in na else c for c in cells], pa.string())
    sample = pa.table(arrays)
    drop = list(drop) + [n for n in columns if hints.get(n) == "drop" and n != label and n not in drop]
    return _infer(list(columns), sample, sample.column(label), label, source, positive_label=positive_label,
                  task=task, key=key, drop=drop, na_values=na_values, dialect=Dialect(), hints=hints)


def infer_spec_from_table(table: pa.Table, label: str, source: str, **kwargs) -> DatasetSpec:
    """`infer_spec_from_rows` of an Arrow table, its column types as hints (numbers and booleans numeric,
    text 'text', temporal, binary and nested types dropped)."""
    hints = {}
    for field in table.schema:
        t = field.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            hints[field.name] = "numeric"
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            hints[field.name] = "text"
        elif not pa.types.is_null(t):
            hints[field.name] = "drop"
    return infer_spec_from_rows(table.to_pylist(), label, source, hints={**hints, **kwargs.pop("hints", {})},
                                columns=table.column_names, **kwargs)


def _infer(header: Sequence[str], sample: pa.Table, labels: pa.ChunkedArray, label: str, path: str,
           positive_label: Optional[str], task: Optional[str], key: Optional[str], drop: Sequence[str],
           na_values: Sequence[str], dialect: Dialect, hints: Optional[Mapping[str, str]] = None) -> DatasetSpec:
    """The roles of string columns `sample` (and the label classes of `labels`): the rules of every source."""
    hints = hints or {}
    columns: list[ColumnSpec] = []
    key_taken = False
    for name in header:
        col = sample.column(name)
        present = col.drop_null()
        n_present = len(present)
        n_unique = len(pc.unique(present)) if n_present else 0
        if name == label:
            role = "label"
        elif name in drop:
            role = "drop"
        elif key is not None:
            role = "key" if name == key else None
        else:
            role = None
        if role is None:
            hint = hints.get(name)
            numeric = hint == "numeric" or (hint is None and _numeric_fraction(col) >= 0.98)
            id_like = bool(_ID_NAME_RE.search(name)) and n_present > 0 and n_unique >= 0.9 * n_present
            if id_like and not key_taken and key is None:
                role = "key"
            elif id_like:
                role = "drop"
            elif numeric:
                role = "numeric"
            elif n_present and pc.sum(pc.match_substring_regex(present, _DATE_RE)).as_py() >= 0.9 * n_present:
                role = "drop"  # dates: a user can derive features from them in an edited spec
            elif n_present > 50 and n_unique > 0.5 * n_present:
                role = "drop"  # free text / ids: not a useful one-hot
            elif n_present == 0:
                role = "drop"
            else:
                role = "categorical"
        if role == "key":
            key_taken = True
        max_cat = None
        if role == "categorical":
            max_cat = min(_MAX_CATEGORIES_CAP, n_unique + max(2, n_unique // 4))
        columns.append(ColumnSpec(name=name, role=role, max_categories=max_cat))

    labels = labels.drop_null()
    counts = {str(v["values"]): int(v["counts"]) for v in pc.value_counts(labels).to_pylist()}
    # A value seen once (or in under 1 row in 10,000) is a typo, not a class: it
    # stays out of label_classes, so its rows are dead-lettered as unknown labels.
    total = sum(counts.values())
    counts = {v: n for v, n in counts.items() if n >= 2 and n >= total / 10000} or counts
    classes = _sort_classes(counts)
    if len(classes) < 2:
        raise UserError(f"--label: column '{label}' in {path} has {len(classes)} distinct value(s) "
                        f"{classes}; need at least two")
    if task is None:
        task = "binary" if len(classes) == 2 else "multiclass"
    if task == "multiclass" and len(classes) > 1000:
        raise UserError(f"--label: column '{label}' has {len(classes)} distinct values: not a classification label")
    if task in ("binary", "anomaly"):
        if len(classes) != 2:
            raise UserError(f"--task={task} needs a label with two values; '{label}' has {len(classes)}: "
                            f"{classes[:10]}")
        if positive_label is None:
            positive_label = _choose_positive(classes, counts)
        if positive_label not in classes:
            raise UserError(f"--positive_label: '{positive_label}' is not a value of '{label}' ({', '.join(classes)})")
        classes = [c for c in classes if c != positive_label] + [positive_label]
    spec = DatasetSpec(columns=columns, task=task, label=label, label_classes=classes,
                       na_values=list(na_values), dialect=dialect)
    return spec.validate(f"inferred spec for {path}")
