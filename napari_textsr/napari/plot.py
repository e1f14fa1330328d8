"""A small line plot painted with QPainter (matplotlib is not a dependency)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 46, 8, 18, 18


@dataclass
class Series:
    """One line: points (x, y) in data units, drawn in ``color`` (dashed if ``dashed``)."""

    label: str
    color: str
    dashed: bool = False
    points: list[tuple[float, float]] = field(default_factory=list)


class CurvePlot(QWidget):
    """Lines over a shared x axis (training steps), with a title, y range labels and a legend.

    ``log_y``: plot log10(y) (for losses), labels still in data units.
    Non-finite and (with ``log_y``) non-positive values are skipped.
    """

    def __init__(self, title: str, log_y: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.log_y = log_y
        self.series: dict[str, Series] = {}
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def add_series(self, label: str, color: str, dashed: bool = False) -> None:
        self.series[label] = Series(label, color, dashed)
        self.update()

    def add_point(self, label: str, x: float, y: float, repaint: bool = True) -> None:
        """Append a point; ``repaint=False`` leaves the repaint to a later ``update()`` (batching)."""
        if not math.isfinite(y) or (self.log_y and y <= 0):
            return
        self.series[label].points.append((float(x), float(y)))
        if repaint:
            self.update()

    def clear(self) -> None:
        for s in self.series.values():
            s.points.clear()
        self.update()

    def _y(self, value: float) -> float:
        return math.log10(value) if self.log_y else value

    def ranges(self) -> tuple[float, float, float, float] | None:
        """(x0, x1, y0, y1) over all points in plot units, or None without points."""
        points = [(x, self._y(y)) for s in self.series.values() for x, y in s.points]
        if not points:
            return None
        xs, ys = zip(*points)
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            pad = abs(y0) * 0.05 or 0.5
            y0, y1 = y0 - pad, y1 + pad
        return x0, x1, y0, y1

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        palette = self.palette()
        text_color = palette.color(palette.WindowText)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        area = QRectF(
            _MARGIN_LEFT,
            _MARGIN_TOP,
            max(1, self.width() - _MARGIN_LEFT - _MARGIN_RIGHT),
            max(1, self.height() - _MARGIN_TOP - _MARGIN_BOTTOM),
        )
        painter.setPen(QPen(text_color))
        painter.drawText(QRectF(0, 0, self.width(), _MARGIN_TOP), Qt.AlignCenter, self.title)
        axis = QColor(text_color)
        axis.setAlpha(90)
        painter.setPen(QPen(axis))
        painter.drawRect(area)
        limits = self.ranges()
        if limits is None:
            painter.setPen(QPen(text_color))
            painter.drawText(area, Qt.AlignCenter, "no data yet")
            painter.end()
            return
        x0, x1, y0, y1 = limits

        def to_screen(x: float, y: float) -> QPointF:
            px = area.left() + (x - x0) / (x1 - x0) * area.width()
            py = area.bottom() - (self._y(y) - y0) / (y1 - y0) * area.height()
            return QPointF(px, py)

        def label(value: float) -> str:
            shown = 10**value if self.log_y else value
            return f"{shown:.3g}"

        painter.setPen(QPen(text_color))
        painter.drawText(QRectF(0, area.top() - 6, _MARGIN_LEFT - 4, 14), Qt.AlignRight, label(y1))
        painter.drawText(QRectF(0, area.bottom() - 8, _MARGIN_LEFT - 4, 14), Qt.AlignRight, label(y0))
        painter.drawText(QRectF(area.left(), area.bottom() + 2, 80, 14), Qt.AlignLeft, f"{x0:g}")
        painter.drawText(QRectF(area.right() - 80, area.bottom() + 2, 80, 14), Qt.AlignRight, f"step {x1:g}")

        legend_x = area.left() + 6
        for s in self.series.values():
            pen = QPen(QColor(s.color), 1.6)
            if s.dashed:
                pen.setStyle(Qt.DashLine)
            painter.setPen(pen)
            if len(s.points) == 1:
                painter.drawEllipse(to_screen(*s.points[0]), 2.5, 2.5)
            elif s.points:
                path = QPainterPath(to_screen(*s.points[0]))
                for x, y in s.points[1:]:
                    path.lineTo(to_screen(x, y))
                painter.drawPath(path)
            if s.points:
                painter.drawLine(QPointF(legend_x, area.top() + 9), QPointF(legend_x + 14, area.top() + 9))
                painter.setPen(QPen(text_color))
                text = f"{s.label} {s.points[-1][1]:.4g}"
                painter.drawText(QPointF(legend_x + 18, area.top() + 13), text)
                legend_x += 24 + painter.fontMetrics().horizontalAdvance(text)
        painter.end()
