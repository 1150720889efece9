"""Reports: plain-text tables for the terminal and Markdown, and the PNG plots.

Plots use matplotlib's non-interactive Agg backend and are written atomically. matplotlib is
imported on the first plot, not with this module: importing it takes about a second, which a
run that only prints its tables should not pay (issue 15, the fixed cost of a run).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from kdistill.checkpoint import atomic_write
from kdistill.errors import KDistillError
from kdistill.losses import soft_targets

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A Markdown table (also readable in a terminal) of ``rows``."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pyplot() -> ModuleType:
    """matplotlib's ``pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def figure_format(path: str | Path) -> str:
    """The file format matplotlib writes for ``path``'s suffix (``.png``, ``.pdf``, ``.svg``,
    ...); no suffix means PNG. An unknown suffix is a :class:`KDistillError` naming the valid."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    supported = pyplot().figure().canvas.get_supported_filetypes()
    pyplot().close("all")
    if suffix not in supported:
        raise KDistillError(
            f"cannot write a figure as .{suffix} ({path}): use one of "
            + ", ".join(f".{name}" for name in sorted(supported))
        )
    return suffix


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure atomically, in the format its suffix names (PNG without one), and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=figure_format(path), dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write(path, buffer.getvalue())
    return Path(path)


# The terms a loss returns, by name: what each panel of plot_curves shows.
_TERM_TITLES = {
    "hard": "Hard-label term: (1 - alpha) x cross-entropy",
    "soft": "Soft-target term: alpha x T² x KL",
    "loss": "Training loss (all terms)",
}


def curves_figure(histories: Mapping[str, Sequence[Mapping]]) -> Figure:
    """The figure of :func:`plot_curves`: test errors, then one panel per loss term.

    Each term a run's loss logged (``train_hard``: cross-entropy with the labels, ``train_soft``:
    the T²-scaled distillation term, or a custom loss's own) gets its own panel, so terms of
    different scales never share an axis; a run that logged no terms shows its ``train_loss``.
    One colour per run in every panel, and one legend below the panels, outside them.
    """
    terms: dict[str, None] = {}
    for history in histories.values():
        for name in _terms(history):
            terms.setdefault(name)
    panels = 1 + len(terms)
    fig, axes = pyplot().subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    ax_err, term_axes = axes[0][0], dict(zip(terms, axes[0][1:], strict=True))
    for index, (label, history) in enumerate(histories.items()):
        style = {"marker": ".", "color": f"C{index % 10}", "label": label}
        epochs = [row["epoch"] for row in history]
        tested = [row for row in history if row.get("test_errors") is not None]  # test_every
        if tested:
            ax_err.plot(
                [row["epoch"] for row in tested], [row["test_errors"] for row in tested], **style
            )
        for name, column in _terms(history).items():
            term_axes[name].plot(epochs, [row[column] for row in history], **style)
    ax_err.set(xlabel="epoch", ylabel="test errors", title="Test errors")
    for name, ax in term_axes.items():
        ax.set(xlabel="epoch", ylabel=f"train_{name}", title=_TERM_TITLES.get(name, name))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        values = [y for line in ax.get_lines() for y in line.get_ydata()]
        if values and min(values) > 0:
            ax.set_yscale("log")
    handles, labels = ax_err.get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # the bottom strip is the legend's
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4) or 1, frameon=False)
    return fig


def _terms(history: Sequence[Mapping]) -> dict[str, str]:
    """``term name -> history column`` of the loss terms a run logged (else its total)."""
    if not history:
        return {}
    columns = [c for c in history[0] if c.startswith("train_") and c != "train_loss"]
    columns = [c for c in columns if history[0][c] is not None]
    if not columns:
        return {"loss": "train_loss"}
    return {c.removeprefix("train_"): c for c in columns}


def plot_curves(histories: Mapping[str, Sequence[Mapping]], path: str | Path) -> Path:
    """Test errors and each training-loss term per epoch, one line per run (see
    :func:`curves_figure`), written to ``path`` in the format its suffix names."""
    figure_format(path)  # an unknown format fails before anything is drawn
    return save_figure(curves_figure(histories), path)


def plot_soft_targets(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    path: str | Path,
    images: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """The teacher's soft targets of a few examples at several temperatures.

    Args:
        logits: ``(K, C)`` teacher logits of K examples.
        temperatures: one bar group per temperature.
        images: optional ``(K, 1, H, W)`` inputs, shown at the left of each row.
    """
    k, c = logits.shape
    columns = len(temperatures) + (images is not None)
    fig, axes = pyplot().subplots(k, columns, figsize=(2.6 * columns, 1.9 * k), squeeze=False)
    names = list(class_names or range(c))
    for row in range(k):
        offset = 0
        if images is not None:
            axes[row][0].imshow(images[row, 0].cpu().numpy(), cmap="gray_r")
            axes[row][0].set_axis_off()
            offset = 1
        for col, temperature in enumerate(temperatures):
            ax = axes[row][col + offset]
            probs = soft_targets(logits[row].float(), temperature).cpu().numpy()
            ax.bar(range(c), probs, color="tab:blue")
            ax.set_ylim(0, 1)
            ax.set_xticks(range(c), names, fontsize=7)
            if row == 0:
                ax.set_title(f"T = {temperature:g}")
    fig.suptitle(
        "Teacher soft targets: a higher T spreads probability over the wrong classes",
        y=1 + 0.2 / k,  # above the column titles, however many rows
    )
    return save_figure(fig, path)


def plot_heatmap(
    values: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    path: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> Path:
    """A grid of numbers as an annotated heat map; the lowest cell is boxed and starred."""
    grid = torch.tensor(values, dtype=torch.float64)
    fig, ax = pyplot().subplots(
        figsize=(1.3 * len(column_labels) + 2.5, 0.7 * len(row_labels) + 1.8)
    )
    image = ax.imshow(grid.numpy(), cmap="viridis_r", aspect="auto")
    fig.colorbar(image, ax=ax)
    finite = torch.where(grid.isnan(), torch.inf, grid)
    best = divmod(int(finite.argmin()), grid.shape[1])
    low, high = float(finite.min()), float(torch.where(grid.isnan(), -torch.inf, grid).max())
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            star = " *" if (i, j) == best else ""
            light = high == low or (float(grid[i, j]) - low) / (high - low) < 0.5  # yellow end
            color = "black" if light else "white"
            ax.text(j, i, f"{grid[i, j]:.4g}{star}", ha="center", va="center", color=color)
    ax.add_patch(
        pyplot().Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, edgecolor="red", lw=3)
    )
    ax.set_xticks(range(len(column_labels)), column_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return save_figure(fig, path)


def plot_lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    xticks: tuple[Sequence[float], Sequence[str]] | None = None,
) -> Path:
    """One line per entry of ``series`` (``label -> (xs, ys)``) on one axis.

    ``xticks``: ``(positions, labels)`` of the x axis, e.g. for values that are not numbers.
    """
    fig, ax = pyplot().subplots(figsize=(6.5, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log")
        ticks = sorted({x for xs, _ in series.values() for x in xs})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    if xticks is not None:
        ax.set_xticks(list(xticks[0]), list(xticks[1]))
        if logx:
            ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_grouped_bars(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """One panel per entry of ``panels``; in each, grouped bars (one bar per series and x)."""
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (name, bars) in zip(axes[0], panels.items(), strict=True):
        width = 0.8 / max(1, len(bars))
        for i, (label, values) in enumerate(bars.items()):
            xs = [x + (i - (len(bars) - 1) / 2) * width for x in range(len(values))]
            ax.bar(xs, values, width=width, label=label)
        ax.set_xticks(range(len(next(iter(bars.values()), []))))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
