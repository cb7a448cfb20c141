"""Charts for the reports: black-and-grey, serif, readable when printed.

No data is a gap (NaN: the line breaks, no bar is drawn), never 0. A chart with nothing to
draw is not produced at all: the builder gets None and writes one line saying why.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: workers and the web process have no display
import matplotlib.pyplot as plt
from matplotlib import font_manager

from .fmt import number

_SERIF = ["Liberation Serif", "DejaVu Serif", "serif"]  # matplotlib falls back glyph by glyph along the list
for _path in sorted(__import__("glob").glob("/usr/share/fonts/truetype/liberation2/LiberationSerif-*.ttf")):
    font_manager.fontManager.addfont(_path)  # Liberation 2 has every Vietnamese glyph
DARK, MID, LIGHT = "#1a1a1a", "#6b6b6b", "#b5b5b5"


def _style(ax, lang: str, percent: bool = False) -> None:
    ax.grid(alpha=0.35, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{number(v, lang, 0)} %"
                                                                     if lang == "vi" else f"{number(v, lang, 0)}%"))
    else:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: number(v, lang, 1)))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _figure(width=7.2, height=2.9):
    families = [f for f in _SERIF if f == "serif" or font_manager.findfont(f, fallback_to_default=False)]
    with plt.rc_context({"font.family": "serif", "font.serif": families, "font.size": 10}):
        return plt.subplots(figsize=(width, height))


def _has(values) -> bool:
    return any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


def line(labels, values, lang: str, *, percent=True, ylim=(0, 100)) -> bytes | None:
    """A line over labels; NaN values are gaps. None when every value is missing."""
    values = [float("nan") if v is None else float(v) for v in values]
    if not _has(values):
        return None
    fig, ax = _figure()
    x = list(range(len(labels)))
    ax.plot(x, values, color=DARK, linewidth=1.4, marker="o", markersize=3.2)
    ax.set_xticks(x)
    step = max(1, -(-len(labels) // 10))  # at most ~10 labels: they never overlap
    ax.set_xticklabels([lab if i % step == 0 else "" for i, lab in enumerate(labels)], fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    _style(ax, lang, percent)
    return _png(fig)


def bars(labels, values, lang: str, *, horizontal=False, percent=False) -> bytes | None:
    """Bars; a missing value draws no bar. None when there is nothing above zero to draw."""
    values = [float("nan") if v is None else float(v) for v in values]
    if not any(v == v and v != 0 for v in values):
        return None
    labels = [str(v) for v in labels]
    fig, ax = _figure(height=max(2.4, 0.32 * len(labels) + 0.9) if horizontal else 2.9)
    if horizontal:
        ax.barh(labels[::-1], [0 if v != v else v for v in values[::-1]], color=MID)
        unit = (" %" if lang == "vi" else "%") if percent else ""
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: number(v, lang, 1) + unit))
        ax.grid(alpha=0.35, linewidth=0.6, axis="x")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    else:
        x = list(range(len(labels)))
        ax.bar([i for i, v in zip(x, values) if v == v], [v for v in values if v == v], color=MID)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8, rotation=0 if len(labels) <= 12 else 45)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        _style(ax, lang, percent)
    return _png(fig)


def stacked(labels, a, b, names: tuple[str, str], lang: str) -> bytes | None:
    if not (any(v for v in a) or any(v for v in b)):
        return None
    fig, ax = _figure()
    x = list(range(len(labels)))
    ax.bar(x, list(a), color=LIGHT, label=names[0], edgecolor=MID, linewidth=0.4)
    ax.bar(x, list(b), bottom=list(a), color=DARK, label=names[1])
    ax.set_xticks(x)
    step = max(1, -(-len(labels) // 10))  # at most ~10 labels: they never overlap
    ax.set_xticklabels([lab if i % step == 0 else "" for i, lab in enumerate(labels)], fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    _style(ax, lang)
    return _png(fig)
