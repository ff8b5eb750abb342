"""The human-readable training report: Markdown plus PNG plots.

    write_report(output_dir, spec, history, metrics, counts)  # → report.md, *.png
"""
from __future__ import annotations

import json
import os
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_learning_curves", "plot_confusion_matrix", "write_report"]


def plot_learning_curves(history: dict, path: str) -> str:
    keys = [k for k in history if not k.startswith("val_") and k != "lr" and f"val_{k}" in history]
    keys = keys or [k for k in history if not k.startswith("val_")]
    n = max(1, len(keys))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="eval")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix, classes, path: str, title: str = "Confusion matrix (eval)") -> str:
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
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_report(output_dir: str, summary: dict, history: dict, metrics: dict, classes: list,
                 model_path: Optional[str] = None) -> str:
    """Writes report.md with learning curves and the confusion matrix; returns its path."""
    curves = plot_learning_curves(history, os.path.join(output_dir, "learning_curves.png"))
    cm = plot_confusion_matrix(metrics["confusion_matrix"], classes,
                               os.path.join(output_dir, "confusion_matrix.png"))
    lines = [f"# Training report: {summary.get('dataset', '')}", ""]
    lines += ["| | |", "|---|---|"]
    for k, v in summary.items():
        lines.append(f"| {k} | {_fmt(v)} |")
    lines += ["", "## Eval metrics", "", "| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        if isinstance(v, (int, float)) or v is None:
            lines.append(f"| {k} | {_fmt(v)} |")
    if "per_class" in metrics:
        lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for c, m in metrics["per_class"].items():
            lines.append(f"| {c} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | {m['support']} |")
    if "at_0.5" in metrics:
        lines += ["", f"At threshold 0.5 instead: `{json.dumps(metrics['at_0.5'])}`"]
    lines += ["", "## Learning curves", "", f"![learning curves]({os.path.basename(curves)})", "",
              "## Confusion matrix", "", f"![confusion matrix]({os.path.basename(cm)})", ""]
    if model_path:
        lines += [f"Exported model: `{model_path}`", ""]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
