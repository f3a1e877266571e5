"""Where INT8 differs: every example of an evaluation on which FP32 and INT8 answer differently, filterable;
double-clicking one opens it in Try it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QTableWidgetItem

from app.gui import widgets


class DifferencesView(widgets.Card):
    open_example = Signal(dict)  # a disagreement, as EvalResult.to_dict() lists it

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[dict] = []
        self.title = widgets.label("", "section")
        self.body.addWidget(self.title)
        row = QHBoxLayout()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: words of the text, a label or an answer")
        self.filter.setAccessibleName("Filter the differing examples")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        row.addWidget(self.filter, 1)
        self.shown = widgets.label("", "muted")
        row.addWidget(self.shown)
        self.body.addLayout(row)
        self.table = widgets.data_table(["Where", "Input", "Expected", "FP32 (score)", "INT8 (score)"],
                                        "Examples where INT8 differs", stretch=1)
        self.table.setMinimumHeight(220)
        self.table.itemActivated.connect(self._activated)
        self.body.addWidget(self.table)
        self.hint = widgets.label("Double-click an example to open it in Try it.", "muted")
        self.body.addWidget(self.hint)
        self.hide()

    def set_evaluation(self, evaluation: dict | None) -> None:
        rows = list((evaluation or {}).get("disagreements") or [])
        self.rows = rows
        self.filter.clear()
        if not evaluation:
            self.hide()
            return
        total, n = int(evaluation.get("n_disagreements") or len(rows)), int(evaluation.get("examples") or 0)
        kept = "" if len(rows) >= total else f" (the first {len(rows)} are listed)"
        self.title.setText(f"Where INT8 differs: {total} of {n} examples{kept}" if total
                           else f"INT8 gives the same answer as FP32 on all {n} examples")
        self.table.setRowCount(0)
        for d in rows:
            r = self.table.rowCount()
            self.table.insertRow(r)
            text = str(d.get("input", ""))
            cells = (str(d.get("where", "")), text if len(text) <= 200 else text[:197] + "…",
                     ", ".join(map(str, d.get("gold") or [])) or "—",
                     f"{d.get('fp32', '')} ({float(d.get('fp32_score') or 0):.3f})",
                     f"{d.get('int8', '')} ({float(d.get('int8_score') or 0):.3f})")
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                if c == 0:
                    item.setData(Qt.UserRole, d)
                if c == 1:
                    item.setToolTip(text[:2000])
                self.table.setItem(r, c, item)
        self.table.setVisible(bool(rows))
        self.filter.setVisible(bool(rows))
        self.hint.setVisible(bool(rows))
        self._apply_filter("")
        self.show()

    @Slot(str)
    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()
        visible = 0
        for r in range(self.table.rowCount()):
            hit = not needle or any(needle in (self.table.item(r, c).text().lower()) for c in range(5))
            self.table.setRowHidden(r, not hit)
            visible += hit
        self.shown.setText(f"{visible} shown" if needle else "")

    @Slot(QTableWidgetItem)
    def _activated(self, item) -> None:
        d = self.table.item(item.row(), 0).data(Qt.UserRole)
        if isinstance(d, dict):
            self.open_example.emit(d)
