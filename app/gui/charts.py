"""QtCharts for the Compare page (imported only when results arrive: QtCharts is slow to load).

Bars for size, memory and latency (FP32 blue, INT8 orange), the headline metric on the user's labelled data, and
a latency distribution of every timed run. Colours follow the theme of the moment: the Compare page rebuilds its
charts when the palette changes. Axes end on round numbers; categories say what the table's rows say.
"""

from __future__ import annotations

from PySide6.QtCharts import (QBarCategoryAxis, QBarSeries, QBarSet, QChart, QChartView, QValueAxis)
from PySide6.QtCore import QMargins, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QGridLayout, QWidget

from app.core.report import histogram
from app.gui import widgets


def _chart(title: str) -> QChart:
    chart = QChart()
    chart.setTitle(title)
    chart.setAnimationOptions(QChart.NoAnimation)
    chart.setBackgroundRoundness(8)
    chart.setMargins(QMargins(6, 6, 6, 6))
    chart.legend().setAlignment(Qt.AlignBottom)
    dark = widgets.is_dark()
    chart.setTheme(QChart.ChartThemeDark if dark else QChart.ChartThemeLight)
    chart.setBackgroundBrush(QColor("#2a2e34" if dark else "#ffffff"))
    f = chart.titleFont()
    f.setPointSizeF(10.5)
    f.setBold(True)
    chart.setTitleFont(f)
    return chart


def _view(chart: QChart, name: str) -> QChartView:
    view = QChartView(chart)
    view.setRenderHint(QPainter.Antialiasing)
    view.setMinimumHeight(240)
    view.setAccessibleName(name)
    return view


def bar_chart(title: str, categories: list[str], fp32: list[float], int8: list[float], unit: str) -> QChartView:
    chart = _chart(title)
    series = QBarSeries()
    for name, values, color in (("FP32", fp32, widgets.FP32_COLOR), ("INT8", int8, widgets.INT8_COLOR)):
        s = QBarSet(name)
        s.append([float(v or 0) for v in values])
        s.setColor(QColor(color))
        s.setBorderColor(QColor(color))
        s.setLabelColor(QColor("#e6e6e6" if widgets.is_dark() else "#1d1f23"))
        series.append(s)
    series.setLabelsVisible(True)
    series.setLabelsFormat("@value")
    series.setLabelsPosition(QBarSeries.LabelsOutsideEnd)
    series.setLabelsPrecision(3)
    chart.addSeries(series)
    x = QBarCategoryAxis()
    x.append(categories)
    chart.addAxis(x, Qt.AlignBottom)
    series.attachAxis(x)
    y = QValueAxis()
    top = max([float(v or 0) for v in (*fp32, *int8)] or [1.0])
    y.setRange(0, top * 1.15 if top > 0 else 1)
    y.applyNiceNumbers()  # round ticks: 0, 50, 100, 150 rather than 0, 41.6, 83.1, 125
    y.setTitleText(unit)
    y.setLabelFormat("%g")
    chart.addAxis(y, Qt.AlignLeft)
    series.attachAxis(y)
    return _view(chart, title)


def distribution_chart(fp32: list[float], int8: list[float], bins: int = 20) -> QChartView:
    chart = _chart("Latency distribution (runs per time bucket)")
    values = [*fp32, *int8]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        hi = lo + 1e-3
    series = QBarSeries()
    series.setBarWidth(0.9)
    for name, data, color in (("FP32", fp32, widgets.FP32_COLOR), ("INT8", int8, widgets.INT8_COLOR)):
        s = QBarSet(name)
        s.append([float(c) for c in histogram(list(data), lo, hi, bins)])
        s.setColor(QColor(color))
        s.setBorderColor(QColor(color))
        series.append(s)
    chart.addSeries(series)
    x = QBarCategoryAxis()
    step = (hi - lo) / bins
    x.append([f"{lo + step * (i + 0.5):.1f}" if i % 4 == 0 else " " * (i + 1) for i in range(bins)])
    x.setTitleText("milliseconds")
    chart.addAxis(x, Qt.AlignBottom)
    series.attachAxis(x)
    y = QValueAxis()
    y.setLabelFormat("%d")
    y.setTitleText("runs")
    chart.addAxis(y, Qt.AlignLeft)
    series.attachAxis(y)
    y.applyNiceNumbers()
    return _view(chart, "Latency distribution")


def comparison_charts(bench: dict | None, evaluation: dict | None = None) -> QWidget:
    from pathlib import Path

    from app.core.verdict import headline_metric

    w = QWidget()
    grid = QGridLayout(w)
    grid.setContentsMargins(0, 0, 0, 0)
    grid.setSpacing(12)
    row = 0
    if bench:
        a, b = bench.get("fp32") or {}, bench.get("int8") or {}
        mb = lambda d, k: (d.get(k) or 0) / 1e6  # noqa: E731
        grid.addWidget(bar_chart("Size on disk and in memory", ["File size", "Memory"],
                                 [mb(a, "file_bytes"), mb(a, "memory_bytes")],
                                 [mb(b, "file_bytes"), mb(b, "memory_bytes")], "MB"), 0, 0)
        grid.addWidget(bar_chart("Time per call", ["Latency p50", "Latency p95"], [a.get("p50_ms"), a.get("p95_ms")],
                                 [b.get("p50_ms"), b.get("p95_ms")], "ms"), 0, 1)
        row = 1
    head = headline_metric(evaluation) if evaluation else None
    if head:
        _, name, fp32_value, points = head
        data = Path(str(evaluation.get("data", ""))).name
        same = 100 * float(evaluation.get("agreement") or 0)
        grid.addWidget(bar_chart(f"{name} on {data} (same answer as FP32 on {same:.1f}%)", [name],
                                 [fp32_value], [fp32_value + points], "points"), row, 0, 1, 2)
        row += 1
    lat32 = list(((bench or {}).get("fp32") or {}).get("latencies_ms") or [])
    lat8 = list(((bench or {}).get("int8") or {}).get("latencies_ms") or [])
    if lat32 or lat8:
        grid.addWidget(distribution_chart(lat32, lat8), row, 0, 1, 2)
    return w
