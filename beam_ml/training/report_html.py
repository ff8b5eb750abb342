"""report.html: one self-contained page (images embedded as data: URIs, no scripts, no external files).

    html = render_html(summary=..., counts=..., spec=..., board=..., final=..., test=..., plots=..., model_meta=...)

Sections (each a <section id=...>): summary, data, leaderboard, learning-curves,
test-metrics, curves, calibration, thresholds, confusion, slices, training-statistics, model.
"""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Optional

from beam_ml.monitoring.report import statistics_section_html
from beam_ml.tuning import selected

__all__ = ["render_html", "SECTIONS"]

SECTIONS = ("summary", "data", "leaderboard", "learning-curves", "test-metrics", "curves", "calibration", "thresholds",
            "confusion", "slices", "training-statistics", "model")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;
border:1px solid #eee}.note{color:#666;font-size:.9rem}.best{background:#eef7ee}pre{background:#f6f8fa;
padding:.8rem;overflow-x:auto;font-size:.85rem}nav a{margin-right:.8rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4f}"
    return _e(v)


def _table(header: list, rows: list, row_class: Optional[list] = None) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(plots: dict, name: str, alt: str) -> str:
    data = plots.get(name)
    if not data:
        return f'<p class="note">No {html.escape(alt.lower())} for this task.</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def _call_example(spec, meta: dict) -> str:
    args = []
    for column, arg in meta.get("raw_inputs", {}).items():
        if column in spec.categorical_columns:
            args.append(f'{arg}=tf.constant(["..."])')
        else:
            args.append(f"{arg}=tf.constant([0.0])")
    version_dir = meta.get("_version_dir", "model/<version>")
    outputs = "score, class_id, class" + (", probabilities" if spec.task == "multiclass" else "")
    return (f"import tensorflow as tf\nm = tf.saved_model.load(\"{version_dir}\")\n"
            f"out = m.signatures[\"serve_dict\"](\n    " + ",\n    ".join(args) + ")\n"
            f"# → {outputs}\n# or: m.signatures[\"serving_default\"](examples=tf.constant([serialized_raw_tf_example]))\n")


def render_html(summary: dict, counts: dict, spec, board: list, final: dict, test: dict, plots: dict,
                model_meta: dict, monitoring: Optional[dict] = None) -> str:
    """The report page as one string."""
    title = f"beam_ml training report: {summary.get('dataset', '')}"
    nav = "<nav>" + "".join(f'<a href="#{s}">{s.replace("-", " ")}</a>' for s in SECTIONS) + "</nav>"
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>{nav}"]
    headline = {k: test.get(k) for k in ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "macro_f1",
                                         "roc_auc_ovr_macro") if k in test}
    parts.append(_section("summary", "Summary", (
        f"<p>Model <b>{_e(final['name'])}</b>, exported as <code>{_e(final['version_dir'])}</code>. "
        f"Every metric on this page is on the <b>test split</b> ({counts['rows_test']} rows held out before "
        f"preprocessing, scored once by the exported model), except the leaderboard, which holds the validation "
        f"scores that chose the model.</p>"
        + (f"<p><b>Test metrics {_e(final['test_note'])}</b> (the model they were measured on is "
           f"<code>{_e(final['evaluated']['version_dir'])}</code>; the served one was refit afterwards with the "
           f"same settings, --final_fit=all).</p>" if final.get("test_note") else ""))
        + _table(["test metric", "value"], [[k, v] for k, v in headline.items()])
        + _table(["", ""], [[k, v] for k, v in summary.items()])))
    columns = [[c.name, c.role, c.default if c.default is not None else "",
                c.max_categories if c.max_categories else ""] for c in spec.columns]
    split_rows = [[name, sum(by_class.values())] + [by_class[c] for c in spec.label_classes]
                  for name, by_class in counts["label_counts"].items()]
    parts.append(_section("data", "Data and dataset spec", (
        f"<p>Task <b>{_e(spec.task)}</b>, label <code>{_e(spec.label)}</code>, classes "
        f"{_e(', '.join(spec.label_classes))}.</p>"
        + _table(["rows in", "good", "dead-lettered", "train", "validation", "test"],
                 [[counts["rows_in"], counts["rows_good"], counts["rows_dead"], counts["rows_train"],
                   counts["rows_validation"], counts["rows_test"]]])
        + "<p class=\"note\">Dead-lettered rows are in <code>dead_letter/</code> with file, line and reason. "
          "Rows per split and class:</p>"
        + _table(["split", "rows"] + list(spec.label_classes), split_rows)
        + _table(["column", "role", "default", "max categories"], columns))))
    chosen_id = selected(board)["set_id"] if board else None
    rule = ("the simplest set (fewest hidden units, the linear model first) whose mean is within one standard "
            "error of the best mean" if summary.get("selection_rule", "one_se") == "one_se"
            else "the highest mean")
    parts.append(_section("leaderboard", "Leaderboard (validation)", (
        f"<p>{len(board)} parameter sets ranked by validation {_e(board[0]['metric'] if board else '')} "
        f"(mean ± sample std over {len(board[0]['folds']) if board else 0} fold(s); the standard error is std/√k, "
        f"or with one fold the bootstrap error of its score). The exported set, highlighted, is {rule}. "
        f"The linear model is always a candidate.</p>"
        + _table(["rank", "model", "mean", "std", "standard error", "per fold", "best epochs", "seconds"],
                 [[r["rank"], r["name"], r["mean"], r["std"], r.get("se"),
                   ", ".join(_num(s) for s in r["scores"]), ", ".join(str(e) for e in r["best_epochs"]),
                   r["seconds"]] for r in board],
                 ["best" if r["set_id"] == chosen_id else "" for r in board])
        + _img(plots, "leaderboard.png", "Leaderboard"))))
    fit = final.get("evaluated") or final  # the curves are the evaluated model's (with validation)
    refit = (f" The served model was then refit with the same settings on all {final['train_rows']} rows."
             if final.get("test_note") else "")
    parts.append(_section("learning-curves", "Learning curves of the final model",
                          f"<p class=\"note\">Trained on {fit['train_rows']} rows, " + (
                              f"fitted exactly by L-BFGS (C={_num(fit['solver']['C'])}, "
                              f"{fit['solver']['iterations']} iterations"
                              f"{'' if fit['solver']['converged'] else ', NOT converged'}): one point per curve."
                              if fit.get("solver") else f"{fit['epochs_run']} epochs.") + refit + "</p>"
                          + _img(plots, "learning_curves.png", "Learning curves")))
    scalars = [[k, v] for k, v in test.items() if isinstance(v, (int, float)) or v is None]
    body = _table(["metric", "value"], scalars)
    if "per_class" in test:
        body += _table(["class", "precision", "recall", "f1", "support"],
                       [[c, m["precision"], m["recall"], m["f1"], m["support"]] for c, m in test["per_class"].items()])
    parts.append(_section("test-metrics", "Test metrics", body))
    parts.append(_section("curves", "ROC and precision-recall curves (test)",
                          _img(plots, "roc_pr.png", "ROC and precision-recall curves")))
    parts.append(_section("calibration", "Calibration (test)", (
        "<p class=\"note\">Observed frequency of the positive class (multiclass: of a correct prediction) per bin "
        "of predicted probability; the diagonal is a perfectly calibrated model.</p>"
        + _img(plots, "calibration.png", "Calibration curve"))))
    table = test.get("threshold_table")
    parts.append(_section("thresholds", "Precision, recall and F1 by threshold (test)", (
        f"<p>The decision threshold {_num(final['threshold'])} was chosen on {_e(final['threshold_from'])} "
        "(best F1), never on test.</p>"
        + (_table(["threshold", "precision", "recall", "f1", "accuracy", "flagged"],
                  [[r["threshold"], r["precision"], r["recall"], r["f1"], r["accuracy"], r["flagged"]]
                   for r in table]) if table else '<p class="note">Not applicable to multiclass.</p>'))))
    parts.append(_section("confusion", "Confusion matrix (test)", (
        _table(["actual \\ predicted"] + list(spec.label_classes),
               [[c] + row for c, row in zip(spec.label_classes, test.get("confusion_matrix", []))])
        + _img(plots, "confusion_matrix.png", "Confusion matrix"))))
    slice_html = []
    for feature, rows in test.get("slices", {}).items():
        keys = ["rows", "accuracy", "macro_f1"] if spec.task == "multiclass" and feature != "label" else \
            (["rows", "precision", "recall", "f1", "support"] if feature == "label" else
             ["rows", "positives", "base_rate", "roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1"])
        slice_html.append(f"<h3>{_e(feature)}</h3>" + _table([feature] + keys,
                                                              [[r["value"]] + [r.get(k) for k in keys] for r in rows]))
    parts.append(_section("slices", "Metrics by slice (test)", "".join(slice_html) or
                          '<p class="note">No categorical features to slice by.</p>'))
    parts.append(statistics_section_html(monitoring))
    meta = dict(model_meta)
    meta["_version_dir"] = final["version_dir"]
    signature = _table(["serve_dict argument", "column", "dtype"],
                       [[arg, col, "string" if col in spec.categorical_columns else "float32 (NaN = missing)"]
                        for col, arg in meta.get("raw_inputs", {}).items()])
    parts.append(_section("model", "The exported model and how to call it", (
        f"<p>Version {meta.get('version')} at <code>{_e(final['version_dir'])}</code>; parameters "
        f"<code>{_e(json.dumps(final['params']))}</code>. Signatures <code>serving_default</code> (serialized raw "
        "tf.Example) and <code>serve_dict</code> (one tensor per raw column) both return score, class_id and "
        "class" + (" and probabilities" if spec.task == "multiclass" else "") + ".</p>" + signature
        + f"<pre>{_e(_call_example(spec, meta))}</pre>"
        + f"<pre>python -m pipelines.predict --model_dir={_e(final['version_dir'])} --json='{{...}}'\n"
          f"python -m pipelines.batch_predict --model_dir={_e(final['version_dir'])} --input=new.csv "
          f"--output=predictions.jsonl</pre>")))
    parts.append("</body></html>")
    return "\n".join(parts)
