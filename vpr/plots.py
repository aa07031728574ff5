"""Figures of the report: Recall@N curves, training curves and example retrievals (PNG).

Figures are built on ``matplotlib.figure.Figure`` directly, which renders PNG with the Agg canvas and
touches no global pyplot/backend state, and are written through :func:`vpr.io.atomic_output`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vpr.errors import VprError
from vpr.evaluation_files import RecallTable
from vpr.io import atomic_output, open_temporary
from vpr.published import dataset_name, method_name, published, query_count
from vpr.stats import recall_interval

# Frame colours of the example grid (RGB 0..1): a retrieved image that is a ground-truth positive / not.
MATCH_COLOUR = (0.0, 0.68, 0.0)
WRONG_COLOUR = (0.86, 0.0, 0.0)
QUERY_COLOUR = (0.15, 0.15, 0.15)
THUMBNAIL_SIZE = 320  # longest side of an image in the example grid, pixels

LAYOUTS = ("auto", "chain", "overlay")


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_png(fig, out: str | os.PathLike, dpi: int = 120) -> None:
    """Render ``fig`` as PNG onto ``out`` atomically."""
    with atomic_output(out) as tmp, open_temporary(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


# ---------------------------------------------------------------------------------------- Recall@N curves
def plot_recall_curves(curves: Sequence[tuple[str, RecallTable]], out: str | os.PathLike,
                       title: str = "", dataset: str | None = None) -> None:
    """One Recall@N line per method over N on a logarithmic axis, with its 95 % interval as a band and
    error bars.

    With ``dataset`` (a key of :mod:`vpr.published`), published numbers of the same methods are drawn as
    crosses in the method's colour, with the interval their query count implies.
    """
    fig = _new_figure(7.6, 4.4)
    ax = fig.add_subplot()
    cycle = [c["color"] for c in _colour_cycle(len(curves))]
    all_ns: set[int] = set()
    for (method, table), colour in zip(curves, cycle, strict=True):
        ns = sorted(table.recall)
        all_ns.update(ns)
        y = np.array([100.0 * table.recall[n] for n in ns])
        ax.plot(ns, y, marker="o", color=colour, label=method_name(method))
        low = np.array([100.0 * table.interval[n][0] for n in ns])
        high = np.array([100.0 * table.interval[n][1] for n in ns])
        ax.fill_between(ns, low, high, color=colour, alpha=0.18, linewidth=0)
        ax.errorbar(ns, y, yerr=[y - low, high - y], fmt="none", ecolor=colour, capsize=3)
        pub = published(method, dataset) if dataset else None
        if pub:
            pub_ns = sorted(pub)
            all_ns.update(pub_ns)
            py = np.array([pub[n] for n in pub_ns])
            count = query_count(dataset)
            yerr = None
            if count:
                ci = np.array([recall_interval(pub[n] / 100.0, count, exact=False) for n in pub_ns]) * 100.0
                yerr = [py - ci[:, 0], ci[:, 1] - py]
            ax.errorbar(pub_ns, py, yerr=yerr, linestyle="none", marker="x", markersize=9, markeredgewidth=2,
                        color=colour, capsize=4, label=f"{method_name(method)} (published)")
    ax.set_xscale("log")
    ticks = sorted(all_ns)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("N (number of retrieved database images)")
    ax.set_ylabel("Recall@N (%), band: 95 % interval")
    low, _ = ax.get_ylim()
    ax.set_ylim(max(0.0, low), 100.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.set_title(title or (f"Recall@N on {dataset_name(dataset)}" if dataset else "Recall@N"))
    save_png(fig, out)


def _colour_cycle(n: int) -> list[dict]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [{"color": cmap(i % 10)} for i in range(n)]


# -------------------------------------------------------------------------------------- training curves
def _chainable(runs: Sequence[tuple[str, list[dict[str, float]]]]) -> bool:
    """True when every log holds one generation and the logs are generations 0, 1, 2, ... in order."""
    gens = []
    for _, rows in runs:
        g = {int(r["generation"]) for r in rows}
        if len(g) != 1:
            return False
        gens.append(g.pop())
    return len(runs) > 1 and gens == list(range(gens[0], gens[0] + len(gens)))


def training_positions(runs: Sequence[tuple[str, list[dict[str, float]]]], chain: bool
                       ) -> tuple[list[np.ndarray], list[float], list[str]]:
    """x position of every row of every run, and the x ticks with their labels.

    Overlay: x = epoch (-1 = the model before training). Chain: the generations follow one another, each
    starting (its epoch -1 row, the model it starts from) at the x of the previous generation's last
    epoch; ticks are labelled ``generation.epoch``.
    """
    xs: list[np.ndarray] = []
    ticks: dict[float, str] = {}
    base = 0.0
    for _, rows in runs:
        epochs = np.array([r["epoch"] for r in rows])
        if not chain:
            xs.append(epochs)
            for e in epochs:
                ticks[float(e)] = str(int(e))
            continue
        x = base + epochs + 1.0
        xs.append(x)
        g = int(rows[0]["generation"])
        for e, xi in zip(epochs, x, strict=True):
            if e >= 0:
                ticks[float(xi)] = f"{g}.{int(e)}"
            else:
                ticks.setdefault(float(xi), "start")
        base = float(x.max())
    positions = sorted(ticks)
    return xs, positions, [ticks[p] for p in positions]


def plot_training(runs: Sequence[tuple[str, list[dict[str, float]]]], out: str | os.PathLike,
                  title: str = "", layout: str = "auto") -> None:
    """Training loss per epoch (left) and validation R@1/R@5 per epoch (right), one colour per run; the
    95 % interval of each recall is a band where the log has it."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    chain = _chainable(runs) if layout == "auto" else layout == "chain"
    if chain:
        gens = [sorted({int(r["generation"]) for r in rows}) for _, rows in runs]
        if any(len(g) != 1 for g in gens):
            raise VprError("--layout chain: every training log must hold a single SFRS generation")
    xs, ticks, labels = training_positions(runs, chain)
    fig = _new_figure(11.0, 4.4)
    ax_loss, ax_rec = fig.subplots(1, 2)
    cycle = [c["color"] for c in _colour_cycle(len(runs))]
    for (label, rows), x, colour in zip(runs, xs, cycle, strict=True):
        epochs = np.array([r["epoch"] for r in rows])
        trained = epochs >= 0  # the epoch -1 row has no training loss (logged as 0)
        loss = np.array([r["loss"] for r in rows])
        ax_loss.plot(x[trained], loss[trained], marker="o", color=colour, label=label)
        for key, style, marker in (("recall@1", "-", "o"), ("recall@5", "--", "s")):
            ax_rec.plot(x, [100.0 * r[key] for r in rows], linestyle=style, marker=marker, color=colour)
            low = np.array([100.0 * r[f"{key}_ci_low"] for r in rows])
            high = np.array([100.0 * r[f"{key}_ci_high"] for r in rows])
            ax_rec.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
        start = ~trained
        if start.any():  # the model before training: hollow markers
            for key in ("recall@1", "recall@5"):
                ax_rec.plot(x[start], [100.0 * r[key] for r, s in zip(rows, start, strict=True) if s],
                            linestyle="none", marker="o", markersize=10, markerfacecolor="white",
                            markeredgecolor=colour, zorder=3)
    if chain:
        xlabel = "epoch (generation.epoch; start = the model before training)"
        boundaries = [float(x.min()) for x in xs[1:]]
        for ax in (ax_loss, ax_rec):
            for b in boundaries:
                ax.axvline(b, color="0.6", linestyle=":", linewidth=1)
    else:
        xlabel = "epoch (-1 = the model before training)"
    for ax in (ax_loss, ax_rec):
        ax.set_xticks(ticks, labels, rotation=90 if len(ticks) > 12 else 0)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    ax_loss.set_ylabel("training loss (mean over the epoch)")
    ax_loss.set_title("training loss")
    ax_loss.legend()
    ax_rec.set_ylabel("validation Recall@N (%), band: 95 % interval")
    ax_rec.set_title("validation recall")
    from matplotlib.lines import Line2D

    ax_rec.legend(handles=[Line2D([], [], color="0.3", linestyle="-", marker="o", label="R@1"),
                           Line2D([], [], color="0.3", linestyle="--", marker="s", label="R@5"),
                           Line2D([], [], color="0.3", linestyle="none", marker="o", markersize=10,
                                  markerfacecolor="white", label="before training")],
                  loc="lower right")
    if title:
        fig.suptitle(title)
    save_png(fig, out)


# ------------------------------------------------------------------------------------- example retrievals
def select_queries(success: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` query indices drawn with ``seed``: half successes, half failures where both exist (the
    other kind fills up when one runs short), in ascending order."""
    success = np.asarray(success, dtype=bool)
    good, bad = np.flatnonzero(success), np.flatnonzero(~success)
    n = min(n, success.size)
    n_bad = min(bad.size, max(n // 2, n - good.size))
    n_good = n - n_bad
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(good, n_good, replace=False), rng.choice(bad, n_bad, replace=False)])
    return np.sort(chosen).astype(np.int64)


def _thumbnail(path: Path, exif_orientation: bool = False) -> np.ndarray:
    from vpr.data.images import load_rgb

    img = load_rgb(path, exif_orientation)
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return np.asarray(img)


def _frame(ax, colour, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(width)


def plot_examples(index, topk: np.ndarray, queries: Sequence[int], out: str | os.PathLike, top: int = 5,
                  distances: np.ndarray | None = None, title: str = "") -> None:
    """A grid: per row a query, then its first ``top`` database results, each framed green when it is a
    ground-truth positive of the query (``index.positives``) and red otherwise, labelled with its rank."""
    queries = list(queries)
    query_files, db_files = index.query_files(), index.db_files()
    fig = _new_figure(2.1 * (top + 1), 1.9 * len(queries) + 0.5)
    axes = np.asarray(fig.subplots(len(queries), top + 1, squeeze=False))
    for row, q in enumerate(queries):
        positives = set(np.asarray(index.positives[q]).tolist())
        ax = axes[row, 0]
        ax.imshow(_thumbnail(query_files[q], index.exif_orientation))
        _frame(ax, QUERY_COLOUR, 1.0)
        hit = [r for r in range(min(top, topk.shape[1])) if topk[q, r] in positives]
        status = f"first match: #{hit[0] + 1}" if hit else f"no match in top {top}"
        ax.set_title(f"query {q}\n{status}", fontsize=8)
        for r in range(top):
            ax = axes[row, r + 1]
            db = int(topk[q, r]) if r < topk.shape[1] else -1
            if db < 0:
                ax.axis("off")
                continue
            ax.imshow(_thumbnail(db_files[db], index.exif_orientation))
            ok = db in positives
            _frame(ax, MATCH_COLOUR if ok else WRONG_COLOUR, 5.0)
            label = f"#{r + 1}  db {db}"
            if distances is not None and math.isfinite(float(distances[q, r])):
                label += f"\nd = {float(distances[q, r]):.3g}"
            ax.set_title(label, fontsize=8)
    radius = index.attrs.get("eval_radius")
    where = f"within {radius:g} m of the query" if radius is not None else "a ground-truth positive"
    fig.suptitle(title or f"{index.path.name}: top-{top} retrievals (green frame: {where}; red: not)",
                 fontsize=10)
    save_png(fig, out, dpi=100)


def _wrapped(label: str, width: int = 28) -> str:
    """``label`` with every line cut into pieces of at most ``width`` characters (long file names)."""
    return "\n".join(line[i:i + width] for line in label.split("\n")
                     for i in range(0, max(len(line), 1), width))


def plot_query_matches(query_file: str | os.PathLike, match_files: Sequence[str | os.PathLike],
                       out: str | os.PathLike, labels: Sequence[str], query_label: str,
                       correct: Sequence[bool] | None = None, exif_orientation: bool = False) -> None:
    """One query and its ranked matches in a row, each image titled with its label (file name, rank,
    distance). With ``correct`` (ground truth known), matches are framed green (a positive) or red."""
    n = len(match_files)
    fig = _new_figure(2.3 * (n + 1), 2.8)
    axes = np.asarray(fig.subplots(1, n + 1, squeeze=False))[0]
    axes[0].imshow(_thumbnail(Path(query_file), exif_orientation))
    _frame(axes[0], QUERY_COLOUR, 1.0)
    axes[0].set_title(_wrapped(query_label), fontsize=7)
    for r, (path, label) in enumerate(zip(match_files, labels, strict=True)):
        ax = axes[r + 1]
        ax.imshow(_thumbnail(Path(path), exif_orientation))
        if correct is None:
            _frame(ax, QUERY_COLOUR, 1.0)
        else:
            _frame(ax, MATCH_COLOUR if correct[r] else WRONG_COLOUR, 5.0)
        ax.set_title(_wrapped(label), fontsize=7)
    save_png(fig, out, dpi=100)
