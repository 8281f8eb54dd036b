"""Pictures a person would rather see than read: score timelines, selected-frame grids, the
quality table as a chart and a training reward curve.

Every axis says what it plots (a CLIP cosine is not an agent score), and legends sit
outside the axes, where they cannot hide a chosen frame or a reference span.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REFERENCE_COLOR, CHOSEN_COLOR, SCORE_COLOR = "tab:green", "tab:red", "tab:blue"


@dataclass
class Panel:
    """One method's view of one question: its per-candidate scores (None: it uses none) and choice."""

    name: str
    timestamps: np.ndarray  # (T,) candidate times, seconds
    scores: np.ndarray | None  # (T,) what the method ranks by
    ylabel: str  # what `scores` is, e.g. "CLIP cosine" or "agent score S"
    selected: Sequence[float]  # chosen times, seconds
    frames: np.ndarray | None = None  # (K, H, W, 3) the chosen frames, for frame rows


def _draw_timeline(ax: plt.Axes, panel: Panel, spans: Sequence[tuple[float, float]]) -> None:
    """Reference spans shaded, the score curve, chosen frames marked (on the curve, or as ticks)."""
    for start, end in spans:
        ax.axvspan(start - 0.5, end + 0.5, color=REFERENCE_COLOR, alpha=0.25, lw=0, label="reference span")
    ts = np.asarray(panel.timestamps, dtype=np.float64)
    selected = np.asarray(panel.selected, dtype=np.float64)
    if panel.scores is None:  # e.g. uniform frames, which need not be candidates
        for t in selected:
            ax.axvline(t, color=CHOSEN_COLOR, lw=1.2, label="chosen frame")
        ax.set_yticks([])
    else:
        scores = np.asarray(panel.scores, dtype=np.float64)
        ax.plot(ts, scores, color=SCORE_COLOR, lw=1.0, label="score of each candidate")
        ax.scatter(selected, np.interp(selected, ts, scores), color=CHOSEN_COLOR, s=16, zorder=3,
                   label="chosen frame")
    ax.set_ylabel(panel.ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if len(ts):
        ax.set_xlim(ts.min() - 1, ts.max() + 1)


def _outside_legend(fig: plt.Figure, axes: Sequence[plt.Axes], where: str = "right") -> None:
    """One legend for the (constrained-layout) figure, outside the axes, right or below
    (labels deduplicated)."""
    unique: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(label, handle)
    if where == "right":
        fig.legend(unique.values(), unique.keys(), loc="outside right center", fontsize=8, frameon=False)
    else:
        fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique), fontsize=8,
                   frameon=False)


def score_timeline(timestamps: Sequence[float], scores: Sequence[float], selected: Sequence[float],
                   path: str | Path, title: str = "", spans: Sequence[tuple[float, float]] = (),
                   ylabel: str = "score") -> Path:
    """PNG: per-candidate score over time, chosen frames marked, ground-truth spans shaded."""
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=110, layout="constrained")
    _draw_timeline(ax, Panel("", np.asarray(timestamps), np.asarray(scores), ylabel, selected), spans)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    _outside_legend(fig, [ax])
    return _save(fig, path)


def method_timelines(panels: Sequence[Panel], spans: Sequence[tuple[float, float]], path: str | Path,
                     title: str = "", verdicts: Mapping[str, str] | None = None) -> Path:
    """PNG: one question, one stacked panel per method on a shared time axis; `verdicts` (e.g.
    hit / miss) are appended to the panel names."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.3 * len(panels) + 0.9), dpi=110, sharex=True,
                             squeeze=False, layout="constrained")
    axes = axes[:, 0]
    for ax, panel in zip(axes, panels):
        _draw_timeline(ax, panel, spans)
        verdict = f": {verdicts[panel.name]}" if verdicts and panel.name in verdicts else ""
        ax.set_title(panel.name + verdict, fontsize=8, loc="left", pad=2)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=9)
    _outside_legend(fig, axes)
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


def method_frames(panels: Sequence[Panel], spans: Sequence[tuple[float, float]], path: str | Path,
                  title: str = "", verdicts: Mapping[str, str] | None = None, tolerance: float = 0.5) -> Path:
    """PNG: one row of chosen frames per method for the same question; a frame inside a
    reference span (widened by `tolerance`) is framed in green."""
    cols = max(len(p.selected) for p in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(cols * 1.25 + 1.6, len(panels) * 1.15 + 0.7), dpi=110,
                             squeeze=False, layout="constrained")
    for row, panel in zip(axes, panels):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
        verdict = f"\n{verdicts[panel.name]}" if verdicts and panel.name in verdicts else ""
        row[0].set_ylabel(panel.name + verdict, fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
        for ax, frame, t in zip(row, panel.frames, panel.selected):
            ax.imshow(frame)
            inside = any(start - tolerance <= t <= end + tolerance for start, end in spans)
            for side in ax.spines.values():
                side.set_visible(inside)
                side.set_color(REFERENCE_COLOR)
                side.set_linewidth(3)
            ax.set_title(f"{t:.0f}s", fontsize=6, pad=1, color=REFERENCE_COLOR if inside else "black")
    fig.suptitle(title + "\n(green frame: inside the reference span)", fontsize=8)
    return _save(fig, path)


def reward_curve(history: Sequence[Mapping[str, float]], path: str | Path, chance: float | None = None,
                 title: str = "", window: int = 20) -> Path:
    """PNG: mean rollout reward per training step, its moving average and the chance level."""
    steps = np.array([m["step"] for m in history])
    reward = np.array([m["reward"] for m in history], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110, layout="constrained")
    ax.plot(steps, reward, color=SCORE_COLOR, alpha=0.3, lw=0.8, label="mean reward of the step's rollouts")
    if len(reward) >= window:
        smooth = np.convolve(reward, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color=SCORE_COLOR, lw=2, label=f"moving average ({window} steps)")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1.2, label=f"chance: random frames ({chance:.2f})")
    ax.set_xlabel("training step")
    ax.set_ylabel("reward")
    if len(reward) and reward.min() >= 0 and reward.max() <= 1:
        ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    _outside_legend(fig, [ax], "below")
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


COMPARISON_PANELS = {"hit_rate": "hit rate (a frame in the reference)",
                     "coverage": "coverage (frames in the reference)",
                     "accuracy": "accuracy (lmms-eval)",
                     "ms_per_question": "selection time per question (ms)"}


def comparison_chart(table: pd.DataFrame, path: str | Path, title: str = "", chance: str | None = None) -> Path:
    """PNG: one horizontal bar panel per column of `COMPARISON_PANELS` the table holds, one bar per
    method; `<column>_lo` / `<column>_hi` columns are drawn as interval whiskers, and the row named
    `chance` as a dashed line instead of a bar."""
    panels = [(col, label) for col, label in COMPARISON_PANELS.items() if col in table.columns]
    methods = [m for m in table.index if m != chance]
    y = np.arange(len(methods))[::-1]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.5, 0.4 * len(methods) + 1.6), dpi=110,
                             sharey=True, squeeze=False, layout="constrained")
    for ax, (col, label) in zip(axes[0], panels):
        values = table.loc[methods, col].to_numpy(dtype=np.float64)
        ax.barh(y, np.nan_to_num(values), color="tab:blue", alpha=0.75, height=0.6)
        right = values
        if f"{col}_lo" in table.columns and f"{col}_hi" in table.columns:
            lo, right = (table.loc[methods, f"{col}_{end}"].to_numpy(dtype=np.float64) for end in ("lo", "hi"))
            ax.errorbar(values, y, xerr=[values - lo, right - values], fmt="none", ecolor="black", capsize=3, lw=1,
                        label="95% confidence interval")
        for yi, v, r in zip(y, values, right):
            ax.text(0 if np.isnan(v) else r, yi, " n/a" if np.isnan(v) else f" {v:.3g}", va="center", fontsize=7)
        if chance is not None and not np.isnan(level := float(table.loc[chance, col])):
            ax.axvline(level, color="gray", ls="--", lw=1.2, label=chance)
        if col != "ms_per_question":
            ax.set_xlim(0, 1.15)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(y, methods)
    fig.suptitle(title, fontsize=9)
    if any(ax.get_legend_handles_labels()[0] for ax in axes[0]):
        _outside_legend(fig, axes[0], "below")
    return _save(fig, path)
