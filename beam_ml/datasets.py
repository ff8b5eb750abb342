"""The bundled datasets: the project trains out of the box on any of them.

    python -m pipelines.train --dataset=retention --runner=DirectRunner
    python -c "from beam_ml import datasets; print(datasets.materialize('fraud', 'data', rows=200000))"

Three tabular datasets are *generated* here, deterministically from a seed, in
the exact column schemas of well-known public files, with a realistic signal
(a small MLP learns a useful model; the classes overlap, so it is neither
trivially separable nor noise):

* ``retention`` -- the schema of the public HR analytics file
  ``HR_comma_sep.csv`` (14,999 employees, about 24% ``left=1``), with its
  known leaver profiles (unhappy; overworked high performers; under-used
  low performers).
* ``absenteeism`` -- daily per-employee rows (about 20,000; about 5%
  ``absent=Yes``) driven by prior absences, health, workload and
  Monday/Friday effects; ``health_score`` has empty cells.
* ``fraud`` -- the schema of the public credit-card fraud file
  ``creditcard.csv`` (``Time, V1..V28, Amount, Class``, about 0.17% fraud).

The fourth, ``digits``, is *real*: the 1,797 8x8 handwritten digits that ship
with scikit-learn (``sklearn.datasets.load_digits``), one pixel per column.

The real public files (``HR_comma_sep.csv``, ``creditcard.csv``) have the same
columns, so they work unchanged through ``--input=<file>`` in place of the
generated ones.

Files are written once by `materialize` (temp file + rename, so concurrent
callers and interrupted runs never see a partial file) and then re-used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from beam_ml import fs
from beam_ml.errors import UserError

__all__ = ["DatasetInfo", "DATASETS", "resolve", "materialize", "write_csv"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a bundled dataset is and how to train on it.

    Attributes:
        name: The dataset's name (``--dataset=<name>``).
        label: The label column.
        positive_label: The label value of the positive class for binary
            tasks, as it appears in the CSV; None for multiclass.
        task: ``'binary'`` or ``'multiclass'``.
        key: The id column carried through to predictions, if any.
        default_rows: Rows written when ``rows`` is not given.
        description: One paragraph for ``--help`` and the README.
    """

    name: str
    label: str
    positive_label: str | None
    task: str
    key: str | None
    default_rows: int
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "retention": DatasetInfo(
        name="retention",
        label="left",
        positive_label="1",
        task="binary",
        key=None,
        default_rows=14_999,
        description=(
            "Employee retention (will this employee leave?), generated in the "
            "schema of the public HR_comma_sep.csv: satisfaction, last "
            "evaluation, projects, monthly hours, tenure, accidents, "
            "promotions, department ('sales') and salary band; about 24% left."
        ),
    ),
    "absenteeism": DatasetInfo(
        name="absenteeism",
        label="absent",
        positive_label="Yes",
        task="binary",
        key="employee_id",
        default_rows=20_000,
        description=(
            "Daily absenteeism (will this employee be absent on this day?), one "
            "row per employee and working day of 2024; 'date' is an identifier "
            "to drop, 'health_score' has missing cells; about 5% absent."
        ),
    ),
    "fraud": DatasetInfo(
        name="fraud",
        label="Class",
        positive_label="1",
        task="binary",
        key=None,
        default_rows=100_000,
        description=(
            "Card-transaction fraud, generated in the schema of the public "
            "creditcard.csv: Time, 28 PCA components V1..V28, Amount and "
            "Class; about 0.17% fraud, so heavily imbalanced."
        ),
    ),
    "digits": DatasetInfo(
        name="digits",
        label="label",
        positive_label=None,
        task="multiclass",
        key=None,
        default_rows=1_797,
        description=(
            "Real 8x8 handwritten digits bundled with scikit-learn "
            "(load_digits): 64 pixel columns (0-16) and the digit 0-9."
        ),
    ),
}


@dataclasses.dataclass(frozen=True)
class _Column:
    """One CSV column: values plus the %-format that prints them."""

    name: str
    values: Sequence | np.ndarray
    fmt: str = "%s"


def _rng(name: str, seed: int) -> np.random.Generator:
    # Each dataset gets its own stream, so changing one generator never
    # changes the bytes of another dataset at the same seed.
    return np.random.default_rng([seed, sum(map(ord, name))])


def _clean_float(x: np.ndarray, decimals: int) -> np.ndarray:
    # Adding 0.0 turns -0.0 into 0.0, which would otherwise print as "-0.00".
    return np.round(x, decimals) + 0.0


# ---------------------------------------------------------------- retention

_DEPARTMENTS = (
    "sales", "technical", "support", "IT", "product_mng",
    "marketing", "RandD", "accounting", "hr", "management",
)
# Head counts (stayed, left) per department in the public file: they give both
# the department mix and its mild effect on leaving.
_DEPT_STAYED = np.array([3126, 2023, 1674, 954, 704, 655, 666, 563, 524, 539])
_DEPT_LEFT = np.array([1014, 697, 555, 273, 198, 203, 121, 204, 215, 91])
_SALARIES = ("low", "medium", "high")


def _retention(rows: int, rng: np.random.Generator) -> list[_Column]:
    n = rows
    # Segment 0 = stayed; leavers come in the three profiles of the public data
    # (burned-out high performers, under-used low performers, well-rated
    # high performers who still leave) plus leavers who look like stayers, so
    # the label is not a pure function of the features.
    segment = rng.choice(5, size=n, p=[0.762, 0.062, 0.098, 0.055, 0.023])
    left = segment > 0

    sat = np.empty(n)
    ev = np.empty(n)
    proj = np.empty(n, dtype=np.int64)
    hours = np.empty(n)
    tenure = np.empty(n, dtype=np.int64)

    def stayer_like(mask: np.ndarray) -> None:
        m = int(mask.sum())
        happy = rng.random(m) < 0.8
        sat[mask] = np.where(
            happy, 0.5 + 0.5 * rng.beta(1.3, 1.1, m), rng.uniform(0.09, 0.5, m))
        ev[mask] = 0.36 + 0.64 * rng.beta(1.6, 1.3, m)
        p = rng.choice([2, 3, 4, 5, 6], size=m, p=[0.07, 0.35, 0.35, 0.19, 0.04])
        proj[mask] = p
        hours[mask] = rng.normal(152 + 12 * p, 45)
        tenure[mask] = rng.choice(
            [2, 3, 4, 5, 6, 7, 8, 10], size=m,
            p=[0.28, 0.425, 0.146, 0.056, 0.045, 0.016, 0.014, 0.018])

    stayer_like((segment == 0) | (segment == 4))

    burnout = segment == 1
    m = int(burnout.sum())
    sat[burnout] = 0.09 + rng.exponential(0.06, m)
    ev[burnout] = rng.normal(0.86, 0.09, m)
    proj[burnout] = rng.choice([5, 6, 7], size=m, p=[0.15, 0.5, 0.35])
    hours[burnout] = rng.normal(268, 28, m)
    tenure[burnout] = rng.choice([3, 4, 5, 6], size=m, p=[0.1, 0.55, 0.3, 0.05])

    underused = segment == 2
    m = int(underused.sum())
    sat[underused] = rng.normal(0.41, 0.07, m)
    ev[underused] = rng.normal(0.52, 0.07, m)
    proj[underused] = rng.choice([2, 3], size=m, p=[0.85, 0.15])
    hours[underused] = rng.normal(146, 18, m)
    tenure[underused] = rng.choice([2, 3, 4], size=m, p=[0.05, 0.85, 0.1])

    flyer = segment == 3
    m = int(flyer.sum())
    sat[flyer] = rng.normal(0.81, 0.09, m)
    ev[flyer] = rng.normal(0.90, 0.07, m)
    proj[flyer] = rng.choice([3, 4, 5], size=m, p=[0.1, 0.5, 0.4])
    hours[flyer] = rng.normal(242, 25, m)
    tenure[flyer] = rng.choice([4, 5, 6], size=m, p=[0.15, 0.6, 0.25])

    sat = _clean_float(np.clip(sat, 0.09, 1.0), 2)
    ev = _clean_float(np.clip(ev, 0.36, 1.0), 2)
    hours = np.clip(np.rint(hours), 96, 310).astype(np.int64)
    proj = np.clip(proj, 2, 7)
    tenure = np.clip(tenure, 2, 10)

    accident = np.where(left, rng.random(n) < 0.047, rng.random(n) < 0.175)
    promoted = np.where(left, rng.random(n) < 0.005, rng.random(n) < 0.026)
    dept_left = rng.choice(10, size=n, p=_DEPT_LEFT / _DEPT_LEFT.sum())
    dept_stayed = rng.choice(10, size=n, p=_DEPT_STAYED / _DEPT_STAYED.sum())
    dept = np.where(left, dept_left, dept_stayed)
    salary = np.where(
        left,
        rng.choice(3, size=n, p=[0.608, 0.369, 0.023]),
        rng.choice(3, size=n, p=[0.450, 0.449, 0.101]))

    return [
        _Column("satisfaction_level", sat, "%.2f"),
        _Column("last_evaluation", ev, "%.2f"),
        _Column("number_project", proj, "%d"),
        _Column("average_montly_hours", hours, "%d"),
        _Column("time_spend_company", tenure, "%d"),
        _Column("Work_accident", accident.astype(np.int64), "%d"),
        _Column("left", left.astype(np.int64), "%d"),
        _Column("promotion_last_5years", promoted.astype(np.int64), "%d"),
        _Column("sales", np.array(_DEPARTMENTS)[dept]),
        _Column("salary", np.array(_SALARIES)[salary]),
    ]


# -------------------------------------------------------------- absenteeism

_ABS_DEPARTMENTS = ("operations", "logistics", "sales", "support", "engineering",
                    "finance", "hr")
_ABS_DEPT_P = (0.30, 0.20, 0.15, 0.13, 0.12, 0.06, 0.04)
# Mean workload per department, on the 0-10 workload_index scale.
_ABS_DEPT_LOAD = np.array([5.8, 6.2, 5.0, 5.4, 5.5, 4.6, 4.4])
_WEEKDAYS = np.array(["Mon", "Tue", "Wed", "Thu", "Fri"])
# US federal holidays of 2023-2024 that fall on weekdays: nobody is scheduled.
_HOLIDAYS = np.array([
    "2023-09-04", "2023-10-09", "2023-11-10", "2023-11-23", "2023-12-25",
    "2024-01-01", "2024-01-15", "2024-02-19", "2024-05-27", "2024-06-19",
    "2024-07-04", "2024-09-02", "2024-10-14", "2024-11-11", "2024-11-28",
    "2024-12-25",
], dtype="datetime64[D]")
# Absences are simulated from here so that prior_absences_90d already has a
# full 90-day history on the first published day (2024-01-02).
_BURN_IN_START = np.datetime64("2023-09-01")
_FIRST_DAY = np.datetime64("2024-01-01")
_END = np.datetime64("2025-01-01")


def _absenteeism(rows: int, rng: np.random.Generator) -> list[_Column]:
    days = np.arange(_BURN_IN_START, _END, dtype="datetime64[D]")
    days = days[np.is_busday(days, holidays=_HOLIDAYS)]
    n_days = len(days)
    first_out = int(np.searchsorted(days, _FIRST_DAY))
    out_days = n_days - first_out
    n_emp = max(1, math.ceil(rows / out_days))

    # Per-employee constants.
    dept = rng.choice(len(_ABS_DEPARTMENTS), size=n_emp, p=_ABS_DEPT_P)
    age = np.clip(np.rint(rng.normal(40, 10, n_emp)), 19, 64).astype(np.int64)
    tenure = _clean_float(
        np.minimum(rng.exponential(6.0, n_emp), age - 18.0), 1)
    distance = _clean_float(np.clip(rng.lognormal(np.log(12), 0.7, n_emp), 0.5, 120), 1)
    children = rng.random(n_emp) < np.clip((age - 22) / 30, 0.05, 0.7)
    base_health = np.clip(rng.normal(76, 9, n_emp), 35, 98)
    base_load = _ABS_DEPT_LOAD[dept] + rng.normal(0, 0.9, n_emp)
    frailty = rng.normal(0, 0.55, n_emp)  # unobserved proneness to absence

    day_num = days.astype(np.int64)
    weekday = (day_num + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    week = (day_num + 3) // 7
    winter = np.isin(month, (12, 1, 2)).astype(float)

    # Workload moves slowly (an AR(1) over working days); overtime is a weekly
    # figure, so it is shared by all days of a week.
    load = np.empty((n_emp, n_days))
    state = rng.normal(0, 1, n_emp)
    shocks = rng.normal(0, 1, (n_emp, n_days))
    for d in range(n_days):
        state = 0.85 * state + math.sqrt(1 - 0.85**2) * shocks[:, d]
        load[:, d] = base_load + 1.1 * state
    load = np.clip(load, 0, 10)
    _, week_idx = np.unique(week, return_inverse=True)
    weekly_noise = rng.normal(2.0, 2.0, (n_emp, week_idx.max() + 1))
    week_load = np.zeros((n_emp, week_idx.max() + 1))
    np.add.at(week_load.T, week_idx, load.T)
    week_load /= np.bincount(week_idx)
    overtime = np.clip(1.8 * (week_load - 5.0) + weekly_noise, 0, 25)[:, week_idx]

    # Illness is a latent on/off state: it lowers the health score and makes
    # absence (often several days running) far more likely.
    ill = np.zeros((n_emp, n_days), dtype=bool)
    absent = np.zeros((n_emp, n_days), dtype=bool)
    prior = np.zeros((n_emp, n_days), dtype=np.int64)
    cum = np.zeros((n_emp, n_days + 1), dtype=np.int64)
    window_start = np.searchsorted(days, days - np.timedelta64(90, "D"))
    u_ill, u_abs = rng.random((n_emp, n_days)), rng.random((n_emp, n_days))
    start_ill = 0.012 * np.exp(0.5 * frailty)
    was_ill = np.zeros(n_emp, dtype=bool)
    was_absent = np.zeros(n_emp, dtype=bool)
    for d in range(n_days):
        p_ill = np.where(was_ill, 0.62, start_ill * (1 + 1.2 * winter[d]))
        ill[:, d] = was_ill = u_ill[:, d] < p_ill
        prior[:, d] = cum[:, d] - cum[:, window_start[d]]
        logit = (
            -4.82
            + 0.16 * np.minimum(prior[:, d], 12)
            + 2.6 * ill[:, d]
            + 0.9 * was_absent
            + 0.28 * (load[:, d] - 5.5)
            + 0.045 * (70 - base_health).clip(0)
            + 0.45 * (weekday[d] == 0)
            + 0.35 * (weekday[d] == 4)
            + 0.15 * children
            + 0.006 * distance
            + frailty
        )
        absent[:, d] = was_absent = u_abs[:, d] < 1 / (1 + np.exp(-logit))
        cum[:, d + 1] = cum[:, d] + absent[:, d]

    health = base_health[:, None] - 22 * ill + rng.normal(0, 6, (n_emp, n_days))
    health = _clean_float(np.clip(health, 0, 100), 1)

    # Published rows: 2024 only, ordered by date then employee, first `rows`.
    emp_idx = np.tile(np.arange(n_emp), out_days)[:rows]
    day_idx = np.repeat(np.arange(first_out, n_days), n_emp)[:rows]
    health_out = health[emp_idx, day_idx]
    # About 7% of health scores are missing (survey not answered): empty cells.
    missing = rng.random(len(health_out)) < 0.07
    health_str = ["" if miss else "%.1f" % h
                  for h, miss in zip(health_out.tolist(), missing.tolist())]
    ids = np.char.add("E", np.char.zfill(np.arange(1, n_emp + 1).astype(str), 4))

    return [
        _Column("employee_id", ids[emp_idx]),
        _Column("date", np.datetime_as_string(days[day_idx], unit="D")),
        _Column("department", np.array(_ABS_DEPARTMENTS)[dept[emp_idx]]),
        _Column("age", age[emp_idx], "%d"),
        _Column("tenure_years", tenure[emp_idx], "%.1f"),
        _Column("distance_to_work_km", distance[emp_idx], "%.1f"),
        _Column("workload_index", _clean_float(load[emp_idx, day_idx], 2), "%.2f"),
        _Column("prior_absences_90d", prior[emp_idx, day_idx], "%d"),
        _Column("day_of_week", _WEEKDAYS[weekday[day_idx]]),
        _Column("month", month[day_idx], "%d"),
        _Column("overtime_hours_week",
                _clean_float(overtime[emp_idx, day_idx], 1), "%.1f"),
        _Column("health_score", health_str),
        _Column("has_children", np.where(children[emp_idx], "Yes", "No")),
        _Column("absent", np.where(absent[emp_idx, day_idx], "Yes", "No")),
    ]


# -------------------------------------------------------------------- fraud

# Standard deviations of V1..V28 in the public file: PCA components, so each
# successive one carries less variance.
_V_STD = np.array([
    1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00,
    0.995, 0.96, 0.915, 0.876, 0.849, 0.838, 0.814, 0.771, 0.735, 0.726,
    0.624, 0.606, 0.521, 0.482, 0.404, 0.330,
])
# Where fraud sits, in standard deviations of each component: the public
# data's most telling components (V14, V12, V10, V17 low; V4, V11 high), at
# roughly 40% of their real shift so the classes overlap.
_FRAUD_SHIFT = {14: -3.0, 12: -2.6, 10: -2.3, 17: -2.4, 4: 1.9, 11: 1.7,
                3: -1.2, 7: -0.9}
_FRAUD_RATE = 492 / 284_807  # as in the public file
_TWO_DAYS_S = 172_800


def _fraud(rows: int, rng: np.random.Generator) -> list[_Column]:
    n = rows
    n_fraud = max(1, round(n * _FRAUD_RATE))
    is_fraud = np.zeros(n, dtype=bool)
    is_fraud[rng.choice(n, n_fraud, replace=False)] = True

    # Transactions arrive with a day/night cycle (quietest around 3-4 am);
    # drawn by rejection sampling, then sorted because Time only increases.
    times = np.empty(0)
    while len(times) < n:
        t = rng.uniform(0, _TWO_DAYS_S, 2 * n)
        rate = 0.55 - 0.45 * np.cos(2 * np.pi * (t / 86_400 - 0.15))
        times = np.concatenate([times, t[rng.random(2 * n) < rate]])
    times = np.sort(np.floor(times[:n])).astype(np.int64)

    # Heavy-tailed components (Student t, 5 dof, scaled to unit variance), as
    # the real components have far more outliers than a Gaussian.
    z = rng.standard_t(5, size=(n, 28)) / math.sqrt(5 / 3)
    fraud_idx = np.flatnonzero(is_fraud)
    # A quarter of frauds are "quiet" (barely shifted): the hard cases.
    strength = np.where(rng.random(n_fraud) < 0.25, 0.25, 1.0)
    z[fraud_idx] *= 1.6  # frauds are also more dispersed
    for comp, shift in _FRAUD_SHIFT.items():
        z[fraud_idx, comp - 1] += strength * shift

    # Amount is lognormal (median about 22, mean about 88) and, as in the real
    # data, correlated with a few components.
    log_amount = (np.log(22.0) - 0.45 * z[:, 1] + 0.3 * z[:, 6] + 0.25 * z[:, 19]
                  + rng.normal(0, 1.55, n))
    amount = np.exp(log_amount)
    # Fraud: either a small card-testing charge or a wide lognormal amount.
    testing = rng.random(n_fraud) < 0.3
    amount[fraud_idx] = np.where(
        testing, rng.uniform(0, 1.5, n_fraud),
        rng.lognormal(np.log(40.0), 1.6, n_fraud))
    amount[rng.random(n) < 0.006] = 0.0  # zero-amount authorisations
    amount = _clean_float(np.clip(amount, 0, 25_691.16), 2)

    v = _clean_float(z * _V_STD, 6)
    columns = [_Column("Time", times, "%d")]
    columns += [_Column(f"V{i + 1}", v[:, i], "%.6f") for i in range(28)]
    columns += [_Column("Amount", amount, "%.2f"),
                _Column("Class", is_fraud.astype(np.int64), "%d")]
    return columns


# ------------------------------------------------------------------- digits

def _digits(rows: int, rng: np.random.Generator) -> list[_Column]:
    del rng  # real data, kept in scikit-learn's order
    from sklearn.datasets import load_digits  # heavy import: only when asked

    bunch = load_digits()
    n_real = len(bunch.target)
    if rows > n_real:
        raise ValueError(
            f"digits has {n_real} real images; rows={rows} is too many")
    pixels = bunch.data[:rows].astype(np.int64)
    columns = [_Column(f"pixel{i}", pixels[:, i], "%d") for i in range(64)]
    columns.append(_Column("label", bunch.target[:rows].astype(np.int64), "%d"))
    return columns


_GENERATORS: dict[str, Callable[[int, np.random.Generator], list[_Column]]] = {
    "retention": _retention,
    "absenteeism": _absenteeism,
    "fraud": _fraud,
    "digits": _digits,
}


def resolve(name: str) -> DatasetInfo:
    """The bundled dataset `name`.

    Raises:
        UserError: naming --dataset and the datasets there are.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"--dataset: unknown dataset '{name}'; choose one of "
                        f"{', '.join(sorted(DATASETS))}") from None


def write_csv(name: str, path: str, rows: int | None = None, seed: int = 42) -> str:
    """Generates a bundled dataset and writes it as CSV with a header.

    Writes `path` directly (not atomically); `materialize` is the safe entry
    point for shared data directories.

    Args:
        name: A key of `DATASETS`.
        path: The local file to (over)write.
        rows: Number of data rows; the dataset's ``default_rows`` if None.
        seed: Seed of the generator; the same (name, rows, seed) always gives
            the same bytes.

    Returns:
        `path`.

    Raises:
        ValueError: For an unknown name, or rows < 1 (or more rows than the
            real digits data has).
    """
    info = resolve(name)
    n = info.default_rows if rows is None else int(rows)
    if n < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    columns = _GENERATORS[name](n, _rng(name, seed))
    row_fmt = ",".join(c.fmt for c in columns)
    # tolist() yields Python scalars, which %-format far faster than numpy
    # scalars; formatting in chunks keeps memory flat for large `rows`.
    values = [c.values.tolist() if isinstance(c.values, np.ndarray)
              else list(c.values) for c in columns]
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(c.name for c in columns) + "\n")
        chunk = 50_000
        for start in range(0, n, chunk):
            rows_iter = zip(*(v[start:start + chunk] for v in values))
            f.write("\n".join(row_fmt % r for r in rows_iter))
            f.write("\n")
    return path


def materialize(name: str, data_dir: str, rows: int | None = None, seed: int = 42) -> str:
    """Writes a bundled dataset to ``<data_dir>/<name>[_<rows>].csv`` once.

    An existing file is re-used as is. The file appears atomically (written
    to a temp file in `data_dir`, then renamed; on gs://, written locally and
    uploaded as one object), so a concurrent reader never sees half a file. A
    non-default seed adds ``_seed<seed>`` to the name so that two seeds never
    share a file.

    Args:
        name: A key of `DATASETS`.
        data_dir: A local directory (created if missing) or a gs:// prefix, which
            Dataflow workers can read.
        rows: Number of data rows; the dataset's ``default_rows`` if None.
        seed: Seed of the generator.

    Returns:
        The CSV file's path.
    """
    resolve(name)
    stem = name if rows is None else f"{name}_{int(rows)}"
    if seed != 42:
        stem += f"_seed{seed}"
    path = fs.join(data_dir, stem + ".csv")
    if fs.exists(path):
        return path
    if not fs.is_local(data_dir):
        with tempfile.TemporaryDirectory() as local_dir:
            fs.copy(write_csv(name, os.path.join(local_dir, stem + ".csv"), rows=rows, seed=seed), path)
        return path
    os.makedirs(data_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=data_dir)
    os.close(fd)
    try:
        write_csv(name, tmp, rows=rows, seed=seed)
        # mkstemp makes the file owner-only; a data file should be readable
        # like any other (e.g. by a container running as another user).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
