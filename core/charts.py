"""Charts drawn by the server as SVG geometry (no chart library, no CDN)."""

from __future__ import annotations


def bar_chart(current: list[tuple], previous: list[tuple], width: int = 720, height: int = 220) -> dict:
    """Geometry for a server-rendered SVG: this period's bars, the previous period's as a line."""
    peak = max([t for _, t in current] + [t for _, t in previous] + [1])
    count = max(len(current), 1)
    slot = width / count
    bars = []
    for index, (day, tokens) in enumerate(current):
        bar_height = round((height - 20) * tokens / peak, 1)
        bars.append(
            {"x": round(index * slot + slot * 0.15, 1), "y": round(height - 20 - bar_height, 1),
             "w": round(slot * 0.7, 1), "h": bar_height, "day": day, "tokens": tokens}
        )  # fmt: skip
    points = " ".join(
        f"{round(index * slot + slot / 2, 1)},{round(height - 20 - (height - 20) * tokens / peak, 1)}"
        for index, (_, tokens) in enumerate(previous[:count])
    )
    labels = [b for i, b in enumerate(bars) if i % max(1, count // 6) == 0]
    return {"width": width, "height": height, "bars": bars, "previous": points, "labels": labels, "peak": peak}
