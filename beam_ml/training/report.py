"""The training report: metrics.json, report.md, report.html and PNG plots, written by the pipeline's last step.

    write_outputs(None, ctx=ctx, counts=counts, board=board, final=final, test=test, trials=trials)

Every metric here is on the test split, scored once by the model trained
without it (with --final_fit=all, the served model is then refit on every row,
and every place showing the metrics says so: summary['test_metrics']);
the leaderboard holds validation (cross-validation) scores, which chose the
model. Files go through beam_ml.fs, so the output dir may be on gs://.
"""
from __future__ import annotations

import io
import json
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from beam_ml import fs  # noqa: E402
from beam_ml.spec import DatasetSpec  # noqa: E402
from beam_ml.training import families  # noqa: E402
from beam_ml.training.report_html import render_html  # noqa: E402
from beam_ml.tuning import selected  # noqa: E402

__all__ = ["plot_learning_curves", "plot_confusion_matrix", "plot_roc_pr", "plot_calibration", "plot_leaderboard",
           "write_outputs", "test_scope", "HEADLINE", "PLOTS"]

HEADLINE = ("accuracy", "roc_auc", "pr_auc", "precision", "recall", "f1", "macro_f1", "roc_auc_ovr_macro")
# File name → what it shows (the HTML report embeds each one).
PLOTS = {"learning_curves.png": "Learning curves", "confusion_matrix.png": "Confusion matrix (test)",
         "roc_pr.png": "ROC and precision-recall curves (test)", "calibration.png": "Calibration (test)",
         "leaderboard.png": "Leaderboard (validation)"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def plot_learning_curves(history: dict) -> bytes:
    keys = [k for k in history if not k.startswith("val_") and k != "lr" and f"val_{k}" in history]
    keys = keys or [k for k in history if not k.startswith("val_") and k != "lr"]
    n = max(1, len(keys))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = np.arange(1, len(history[key]) + 1)
        marker = "o" if len(epochs) == 1 else None  # an exact (L-BFGS) fit has one point: show it
        ax.plot(epochs, history[key], label="train", marker=marker)
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation", marker=marker)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    return _png(fig)


def plot_confusion_matrix(matrix, classes, title: str = "Confusion matrix (test)") -> bytes:
    m = np.asarray(matrix)
    size = max(3.5, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45 if len(classes) > 4 else 0)
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    hi = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if hi and m[i, j] > hi / 2 else "black", fontsize=8)
    return _png(fig)


def plot_roc_pr(test: dict) -> Optional[bytes]:
    roc, pr = test.get("roc_curve"), test.get("pr_curve")
    if not roc or not pr:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6))
    a.plot(roc["fpr"], roc["tpr"])
    a.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    a.set(title=f"ROC (AUC {test['roc_auc']:.3f})", xlabel="false positive rate", ylabel="true positive rate")
    b.plot(pr["recall"], pr["precision"])
    b.axhline(test.get("base_rate", 0), linestyle="--", color="grey", linewidth=0.8)
    b.scatter([test["recall"]], [test["precision"]], color="red", zorder=3, label=f"threshold {test['threshold']:.3g}")
    b.set(title=f"Precision-recall (AP {test['pr_auc']:.3f})", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    b.legend(loc="lower left")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _png(fig)


def plot_calibration(calibration: Optional[dict], what: str = "P(positive)") -> Optional[bytes]:
    if not calibration or not calibration.get("count"):
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect")
    ax.plot(calibration["mean_predicted"], calibration["fraction_positive"], "o-", label="model")
    ax.set(title=f"Reliability (ECE {calibration['ece']:.3f})", xlabel=f"mean predicted {what}",
           ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_leaderboard(board: Sequence[dict]) -> Optional[bytes]:
    rows = [r for r in board if r["mean"] is not None and r["mean"] == r["mean"]][:20]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color=[
        "tab:orange" if families.of(r["params"]) is families.BASELINE else "tab:blue" for r in rows], alpha=0.85)
    ax.set_yticks(y, labels=[r["name"] for r in rows], fontsize=7)
    lo = min(r["mean"] - r["std"] for r in rows)
    hi = max(r["mean"] + r["std"] for r in rows)
    ax.set_xlim(max(0.0, lo - (hi - lo) * 0.3 - 1e-3), min(1.0, hi + (hi - lo) * 0.1 + 1e-3))
    ax.set_xlabel(f"validation {rows[0]['metric']} (mean ± std over folds; orange: linear)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4f}"
    return str(v)


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) or v is None}


def _weights_text(weights: Optional[dict]) -> str:
    return json.dumps(weights) if weights else "none"


def _history_csv(history: dict) -> str:
    keys = list(history)
    n = max((len(v) for v in history.values()), default=0)
    lines = [",".join(["epoch"] + keys)]
    for i in range(n):
        lines.append(",".join([str(i)] + [repr(history[k][i]) if i < len(history[k]) else "" for k in keys]))
    return "\n".join(lines) + "\n"


def _markdown(summary: dict, test: dict, board: list, plots: dict) -> str:
    lines = [f"# Training report: {summary.get('dataset', '')}", "", "Every metric below is on the test split "
             "(held out before preprocessing, scored once by the exported model" +
             (f"; {summary['test_metrics']}" if summary.get("test_metrics") else "") + ").", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    lines += ["", "## Test metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in _scalars(test).items()]
    if "per_class" in test:
        lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for c, m in test["per_class"].items():
            lines.append(f"| {c} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {m['support']} |")
    if "at_0.5" in test:
        lines += ["", f"At threshold 0.5 instead: `{json.dumps(test['at_0.5'])}`"]
    lines += ["", "## Leaderboard (validation)", "",
              "| rank | model | mean | std | standard error | folds | exported |", "|---|---|---|---|---|---|---|"]
    for r in board:
        lines.append(f"| {r['rank']} | {r['name']} | {_fmt(r['mean'])} | {_fmt(r['std'])} | {_fmt(r.get('se'))} | "
                     f"{len(r['folds'])} | {'yes' if r.get('selected') else ''} |")
    for name, title in PLOTS.items():
        if name in plots:
            lines += ["", f"## {title}", "", f"![{title.split(' (')[0].lower()}]({name})"]
    return "\n".join(lines) + "\n"


def _without_history(final: dict) -> dict:
    out = {k: v for k, v in final.items() if k != "history"}
    if "evaluated" in out:
        out["evaluated"] = _without_history(out["evaluated"])
    return out


def test_scope(summary: dict, rows_test: int) -> str:
    """What the test metrics were measured on, in words (the CLI summary and report.md)."""
    return summary.get("test_metrics") or f"{rows_test} rows never used for training or choosing"


def write_outputs(_, ctx, counts: dict, board: list, final: dict, test: dict, trials: list,
                  monitoring: Optional[dict] = None) -> dict:
    """Writes metrics.json, report.md, report.html, the PNGs and history.csv; adds test metrics to the model."""
    from beam_ml.export import json_safe, update_model_metadata

    spec = DatasetSpec.from_dict(ctx.spec)
    out = ctx.output_dir
    test = dict(test)
    chosen = selected(board)
    summary = {
        "dataset": ctx.dataset_name, "task": spec.task, "label": spec.label, "classes": ", ".join(spec.label_classes),
        "train_label_counts": ", ".join(f"{c}={n}" for c, n in counts["train_label_counts"].items()),
        "rows_train": counts["rows_train"], "rows_validation": counts["rows_validation"],
        "rows_test": counts["rows_test"], "rows_dead": counts["rows_dead"],
        "tuned": ctx.tune, "tune_metric": ctx.metric, "trials": len(trials),
        "trial_seconds": round(sum(float(t["seconds"]) for t in trials), 1),
        "model": final["name"], "cv_mean": chosen["mean"], "cv_std": chosen["std"],
        "selection_rule": ctx.selection_rule, "class_weights": _weights_text(next(
            (t["class_weights"] for t in trials if t["set_id"] == chosen["set_id"]), None)),
        "batch_size": final["batch_size"], "epochs_run": final["epochs_run"],
        "decision_threshold": final["threshold"], "threshold_from": final["threshold_from"],
        "model_version_dir": final["version_dir"],
    }
    note = final.get("test_note")
    evaluated = final.get("evaluated")
    if note:
        # The served model was refit on every row after the test evaluation: the metrics are the evaluated one's.
        summary.update(final_fit="all", rows_final_fit=final["train_rows"], test_metrics=note,
                       evaluated_model_dir=evaluated["version_dir"])
    curves = (evaluated or final)["history"]  # the evaluated model's curves: with validation, they chose the epochs
    plots = {"learning_curves.png": plot_learning_curves(curves),
             "confusion_matrix.png": plot_confusion_matrix(test["confusion_matrix"], spec.label_classes)
             if test.get("confusion_matrix") else None,
             "roc_pr.png": plot_roc_pr(test),
             "calibration.png": plot_calibration(test.get("calibration"),
                                                 "top-class probability" if spec.task == "multiclass"
                                                 else "P(positive)"),
             "leaderboard.png": plot_leaderboard(board)}
    plots = {k: v for k, v in plots.items() if v}
    for name, data in plots.items():
        fs.write_bytes(fs.join(out, name), data)
    lean_board = [{k: v for k, v in r.items()} for r in board]
    md_path, html_path = fs.join(out, "report.md"), fs.join(out, "report.html")
    result = {"summary": summary, "test": test, "leaderboard": lean_board,
              "final": _without_history(final), "history": curves,
              "counts": counts, "report": html_path, "report_md": md_path,
              "trials": [{k: t[k] for k in ("trial_id", "set_id", "fold", "score", "best_epoch", "epochs_run",
                                            "seconds", "pid")} for t in trials]}
    fs.write_text(fs.join(out, "history.csv"), _history_csv(curves))
    fs.write_text(md_path, _markdown(summary, test, board, plots))
    if evaluated:
        update_model_metadata(evaluated["version_dir"], {"test_metrics": _scalars(test)})
    meta = update_model_metadata(final["version_dir"], {"test_metrics": _scalars(test),
                                                        **({"test_metrics_note": note} if note else {})})
    fs.write_text(html_path, render_html(summary=summary, counts=counts, spec=spec, board=board, final=final,
                                         test=test, plots=plots, model_meta=meta, monitoring=monitoring))
    fs.write_json(fs.join(out, "metrics.json"), json_safe(result))
    return result


def summary_text(metrics: dict, max_rows: int = 12) -> str:
    """The CLI's closing lines: the leaderboard (validation), the test metrics, where the model and report are."""
    board, test, summary = metrics["leaderboard"], metrics["test"], metrics["summary"]
    width = max([len(r["name"]) for r in board[:max_rows]] + [5])
    one_fold = len(board[0]["folds"]) == 1
    spread = "se" if one_fold else "std"
    lines = [f"[beam_ml] leaderboard (validation {board[0]['metric']}, " + (
        "one fold ± its bootstrap standard error):" if one_fold else
        f"mean ± std over {len(board[0]['folds'])} fold(s)):")]
    for r in board[:max_rows]:
        mark = "*" if r.get("selected", r["rank"] == 1) else " "
        lines.append(f"  {mark}{r['rank']:>3}  {r['name']:<{width}}  {_fmt(r['mean'])} ± {_fmt(r.get(spread))}")
    if len(board) > max_rows:
        lines.append(f"  ... {len(board) - max_rows} more in metrics.json")
    headline = {k: round(test[k], 4) for k in HEADLINE if isinstance(test.get(k), float)}
    chosen = selected(board)
    if chosen is not board[0]:
        lines.append(f"[beam_ml] {chosen['name']} is within one standard error ({_fmt(chosen.get('margin'))}) of "
                     f"the best mean, and simpler: it is the one exported (--selection_rule=one_se)")
    lines += [f"[beam_ml] chosen:  {chosen['name']}  {json.dumps(chosen['params'])}",
              f"[beam_ml] test:    {json.dumps(headline)}  ({test_scope(summary, test.get('rows', 0))})",
              f"[beam_ml] model:   {summary['model_version_dir']}",
              f"[beam_ml] metrics: {metrics['report'].rsplit('/', 1)[0]}/metrics.json",
              f"[beam_ml] report:  {metrics['report']}"]
    return "\n".join(lines)
