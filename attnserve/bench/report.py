"""A load run for people (a table, a plot) and for machines (JSON).

The plot is drawn with Pillow (already a dependency): latency percentiles (p50 solid, p99
dashed) against the offered load, one colour per series, both axes logarithmic when the values
span a decade or more.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .stats import Summary

Series = Mapping[str, Sequence[Summary]]


def table(summaries: Sequence[Summary], *, title: str = "") -> str:
    """Fixed-width text, one row per measured point."""
    header = (
        f"{'load':>9} {'answers/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'ok':>7} {'errors':<24} {'KB/answer':>9}"
    )
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for s in summaries:
        errors = ", ".join(f"{code} {n}" for code, n in s.errors.items()) or "-"
        lines.append(
            f"{s.label:>9} {s.throughput:>10.1f} {_ms(s.p50_ms)} {_ms(s.p90_ms)} {_ms(s.p99_ms)} "
            f"{_ms(s.max_ms)} {s.ok:>7} {errors:<24} {s.bytes_per_answer / 1e3:>9.1f}"
        )
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{'-':>8}" if math.isnan(value) else f"{value:>8.2f}"


def to_json(series: Series, **context: Any) -> dict[str, Any]:
    """Everything measured, with what was measured (``context``: target, image, options, ...)."""
    return {**context, "series": {name: [s.to_json() for s in points] for name, points in series.items()}}


# -- the plot --------------------------------------------------------------------------------

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
_SIZE = (960, 600)
_MARGIN = (90, 40, 200, 70)  # left, top, right, bottom


def plot_png(series: Series, *, title: str, x_label: str) -> bytes:
    """Latency p50 (solid) and p99 (dashed) against each point's offered load, as a PNG."""
    points = [
        (s.offered, v)
        for ss in series.values()
        for s in ss
        if s.offered is not None
        for v in (s.p50_ms, s.p99_ms)
        if v > 0 and not math.isnan(v)
    ]
    if not points:
        raise ValueError("nothing to plot: no series has a point with an offered load and a latency")
    xs = _Axis([x for x, _ in points])
    ys = _Axis([y for _, y in points])
    width, height = _SIZE
    left, top, right, bottom = _MARGIN
    box = (left, top, width - right, height - bottom)
    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            box[0] + xs.fraction(x) * (box[2] - box[0]),
            box[3] - ys.fraction(y) * (box[3] - box[1]),
        )

    for tick in ys.ticks():
        _, y = px(xs.low, tick)
        draw.line([(box[0], y), (box[2], y)], fill=(225, 225, 225))
        draw.text((box[0] - 8, y), _label(tick), fill="black", font=small, anchor="rm")
    for tick in xs.ticks():
        x, _ = px(tick, ys.low)
        draw.line([(x, box[1]), (x, box[3])], fill=(235, 235, 235))
        draw.text((x, box[3] + 8), _label(tick), fill="black", font=small, anchor="mt")
    draw.rectangle(box, outline="black")
    draw.text(((box[0] + box[2]) / 2, 12), title, fill="black", font=font, anchor="mt")
    draw.text(((box[0] + box[2]) / 2, height - 22), x_label, fill="black", font=font, anchor="mm")
    draw.text((16, (box[1] + box[3]) / 2), "ms", fill="black", font=font, anchor="lm")

    for index, (name, summaries) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        for attribute, dashed in (("p50_ms", False), ("p99_ms", True)):
            line = [
                px(s.offered, getattr(s, attribute))
                for s in summaries
                if s.offered is not None and getattr(s, attribute) > 0
            ]
            _polyline(draw, line, colour, dashed)
            for x, y in line:
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        legend_y = box[1] + 10 + index * 40
        draw.line([(box[2] + 14, legend_y), (box[2] + 44, legend_y)], fill=colour, width=2)
        draw.text((box[2] + 50, legend_y), f"{name} p50", fill="black", font=small, anchor="lm")
        _polyline(draw, [(box[2] + 14, legend_y + 18), (box[2] + 44, legend_y + 18)], colour, True)
        draw.text((box[2] + 50, legend_y + 18), f"{name} p99", fill="black", font=small, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _polyline(
    draw: ImageDraw.ImageDraw, line: list[tuple[float, float]], colour: tuple[int, int, int], dashed: bool
) -> None:
    for (x0, y0), (x1, y1) in zip(line, line[1:], strict=False):
        if not dashed:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=2)
            continue
        length = math.hypot(x1 - x0, y1 - y0)
        steps = max(1, int(length // 8))
        for step in range(0, steps, 2):
            a, b = step / steps, min(1.0, (step + 1) / steps)
            draw.line(
                [(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                fill=colour,
                width=2,
            )


def _label(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{value:.2g}"


class _Axis:
    """Linear, or logarithmic when the values span at least a decade."""

    def __init__(self, values: list[float]) -> None:
        low, high = min(values), max(values)
        self.log = low > 0 and high / low >= 10
        if self.log:
            self.low, self.high = 10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high))
        else:
            span = (high - low) or abs(high) or 1.0
            self.low, self.high = max(0.0, low - 0.1 * span), high + 0.1 * span

    def fraction(self, value: float) -> float:
        if self.log:
            return (math.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        return (value - self.low) / (self.high - self.low)

    def ticks(self) -> list[float]:
        if self.log:
            decades = range(round(math.log10(self.low)), round(math.log10(self.high)) + 1)
            return [m * 10.0**d for d in decades for m in (1, 2, 5) if self.low <= m * 10.0**d <= self.high]
        step = 10 ** math.floor(math.log10((self.high - self.low) / 5))
        for multiple in (1, 2, 5, 10):
            if (self.high - self.low) / (step * multiple) <= 8:
                step *= multiple
                break
        first = math.ceil(self.low / step) * step
        return [first + i * step for i in range(int((self.high - first) / step) + 1)]
