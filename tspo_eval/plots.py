"""Pictures a person would rather see than read: score timelines and selected-frame grids."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def score_timeline(timestamps: Sequence[float], scores: Sequence[float], selected: Sequence[float],
                   path: str | Path, title: str = "", spans: Sequence[tuple[float, float]] = ()) -> Path:
    """PNG: per-candidate score over time, chosen frames marked, ground-truth spans shaded."""
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=110)
    for start, end in spans:
        ax.axvspan(start - 0.5, end + 0.5, color="tab:green", alpha=0.2, label="reference")
    ax.plot(timestamps, scores, color="tab:blue", lw=1.2, label="score")
    chosen = np.isin(np.round(np.asarray(timestamps), 6), np.round(np.asarray(selected), 6))
    ax.scatter(np.asarray(timestamps)[chosen], np.asarray(scores)[chosen], color="tab:red", s=14, zorder=3,
               label=f"chosen ({int(chosen.sum())})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


def frame_grid(frames: np.ndarray, timestamps: Sequence[float], path: str | Path, cols: int = 8,
               title: str = "") -> Path:
    """PNG: the chosen frames (K, H, W, 3) in time order, each captioned with its time."""
    k = len(frames)
    rows = max(1, math.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.4 + 0.4), dpi=110, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            ax.imshow(frames[i])
            ax.set_title(f"{timestamps[i]:.1f}s", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


COMPARISON_PANELS = {"hit_rate": "hit rate (a frame in the reference)",
                     "coverage": "coverage (frames in the reference)",
                     "accuracy": "accuracy (lmms-eval)",
                     "ms_per_question": "selection time per question (ms)"}


def comparison_chart(table: "pandas.DataFrame", path: str | Path, title: str = "") -> Path:
    """PNG: one horizontal bar panel per column of `COMPARISON_PANELS` the table holds, one bar per method."""
    panels = [(col, label) for col, label in COMPARISON_PANELS.items() if col in table.columns]
    methods = list(table.index)
    y = np.arange(len(methods))[::-1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 0.4 * len(methods) + 1.4), dpi=110,
                             sharey=True, squeeze=False)
    for ax, (col, label) in zip(axes[0], panels):
        values = table[col].to_numpy(dtype=np.float64)
        ax.barh(y, np.nan_to_num(values), color="tab:blue", alpha=0.75, height=0.6)
        for yi, v in zip(y, values):
            ax.text(0 if np.isnan(v) else v, yi, " n/a" if np.isnan(v) else f" {v:.3g}", va="center", fontsize=7)
        if col != "ms_per_question":
            ax.set_xlim(0, 1.15)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(y, methods)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
