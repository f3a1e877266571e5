"""Library: the converted models in the store — open in Try it, compare, reveal on disk, delete."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QHBoxLayout, QTableWidgetItem,
                               QWidget)

from app.gui import widgets
from app.gui.worker import start_task

log = logging.getLogger(__name__)


def measured_words(results: dict | None) -> str:
    """'2.3x faster · 99.5% same on dev.tsv · 2026-12-02': the last benchmark and evaluation kept with a model."""
    results = results or {}
    bench, evaluations = results.get("bench"), results.get("evaluations") or []
    words, stamps = [], []
    if bench and (bench.get("ratios") or {}).get("p50"):
        words.append(f"{bench['ratios']['p50']:.1f}x faster")
        stamps.append(bench.get("measured_at"))
    if evaluations:
        e = evaluations[0]
        words.append(f"{100 * float(e.get('agreement', 0)):.1f}% same on {Path(str(e.get('data', ''))).name}")
        stamps.append(e.get("measured_at"))
    stamps = [s for s in stamps if isinstance(s, (int, float))]
    if stamps:
        words.append(time.strftime("%Y-%m-%d", time.localtime(max(stamps))))
    return " · ".join(words) or "not measured yet"


def measured_details(results: dict | None) -> str:
    machines = {r.get("machine") for r in [(results or {}).get("bench") or {}, *((results or {}).get("evaluations")
                                                                                or [])] if r.get("machine")}
    return ("Measured on " + "; ".join(sorted(machines))) if machines else ""


class LibraryPage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.entries: list = []
        lay = widgets.page_layout(
            self, "Library", "Models you converted. They work offline; open one to try it or compare it again.")
        self.where = widgets.label("", "muted", selectable=True)
        lay.addWidget(self.where)
        self.table = widgets.data_table(["Model", "Task", "Revision", "FP32", "INT8", "Converted", "Last measured"],
                                        "Converted models", stretch=-1)  # "Last measured" takes the spare width
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemActivated.connect(lambda item: self.open_selected())
        lay.addWidget(self.table, 1)
        self.empty = widgets.label("No converted models yet. Pick one on “Choose model” and press Convert.",
                                   "muted", wrap=True)
        lay.addWidget(self.empty)
        row = QHBoxLayout()
        self.open_button = widgets.primary_button("&Open in Try it", "Open the model in Try it")
        self.open_button.clicked.connect(self.open_selected)
        self.compare_button = widgets.button("Co&mpare", "Compare the model")
        self.compare_button.clicked.connect(self.compare_selected)
        self.use_button = widgets.button("&Use it...", "Export the model, copy code that runs it, inspect it")
        self.use_button.clicked.connect(self.use_selected)
        self.reveal_button = widgets.button("Show on &disk", "Show the model folder on disk")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.delete_button = widgets.button("&Delete...", "Delete the converted model")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = widgets.button("Re&fresh", "Refresh the list")
        self.refresh_button.clicked.connect(window.refresh_entries)
        for b in (self.open_button, self.compare_button, self.use_button, self.reveal_button, self.delete_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.refresh_button)
        lay.addLayout(row)
        window.entries_changed.connect(self.set_entries)
        self._update_buttons()

    @Slot(list)
    def set_entries(self, entries) -> None:
        self.entries = list(entries)
        try:
            from app.core.store import store_root
            self.where.setText(f"Stored in {store_root()}")
        except Exception:  # noqa: BLE001 - only a caption
            self.where.setText("")
        t = self.table
        t.setRowCount(0)
        for e in self.entries:
            r = t.rowCount()
            t.insertRow(r)
            name = QTableWidgetItem(str(e.name))
            name.setData(Qt.UserRole, e)
            name.setToolTip(str(e.path))
            t.setItem(r, 0, name)
            if e.damaged:  # listed with its fix, never opened
                status = QTableWidgetItem("Damaged: convert it again or delete it")
                status.setToolTip(f"{e.problem}. {e.fix()}.")
                t.setItem(r, 1, status)
                for c in range(2, 7):
                    t.setItem(r, c, QTableWidgetItem(""))
                continue
            task = QTableWidgetItem(widgets.task_title(e.task) + (" (stale)" if e.stale else ""))
            if e.stale:
                task.setToolTip(f"Stale: {e.stale}. Convert it again to bring it up to date.")
            t.setItem(r, 1, task)
            t.setItem(r, 2, QTableWidgetItem((e.revision or "local")[:10]))
            t.setItem(r, 3, QTableWidgetItem(widgets.human_bytes(e.model_bytes("fp32"))))
            t.setItem(r, 4, QTableWidgetItem(widgets.human_bytes(e.model_bytes("int8")) if e.int8_dir
                                             else "not kept"))
            created = e.manifest.get("created")
            t.setItem(r, 5, QTableWidgetItem(time.strftime("%Y-%m-%d %H:%M", time.localtime(created))
                                             if isinstance(created, (int, float)) else ""))
            kept = self.window.results.get(str(e.path))
            measured = QTableWidgetItem(measured_words(kept))
            measured.setToolTip("\n".join(filter(None, (measured_words(kept), measured_details(kept)))))
            t.setItem(r, 6, measured)
        self.empty.setVisible(not self.entries)
        self._update_buttons()

    def selected(self):
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.UserRole) if rows else None

    def select(self, index: int) -> None:
        self.table.selectRow(index)

    def _update_buttons(self) -> None:
        e = self.selected()
        for b in (self.reveal_button, self.delete_button):
            b.setEnabled(e is not None)
        for b in (self.open_button, self.compare_button, self.use_button):  # a damaged entry: delete or convert
            b.setEnabled(e is not None and not e.damaged)

    @Slot()
    def open_selected(self) -> None:
        self._show_selected("Try it")

    @Slot()
    def compare_selected(self) -> None:
        self._show_selected("Compare")

    def _show_selected(self, page: str) -> None:
        e = self.selected()
        if e is not None and not e.damaged:
            self.window.set_entry(e)
            self.window.show_page(page)

    @Slot()
    def use_selected(self) -> None:
        e = self.selected()
        if e is not None and not e.damaged:
            from app.gui.use_it import UseItDialog
            self.use_dialog = UseItDialog(e, self)
            self.use_dialog.open()

    @Slot()
    def reveal_selected(self) -> None:
        e = self.selected()
        if e is not None:
            if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(e.path))):  # no file manager registered
                from PySide6.QtWidgets import QApplication
                QApplication.clipboard().setText(str(e.path))
                self.where.setText(f"No file manager could open the folder; its path is copied to the clipboard: "
                                   f"{e.path}")

    @Slot()
    def delete_selected(self) -> None:
        e = self.selected()
        if e is None or self.window.busy():
            return
        origin = ("The original model in your Hugging Face cache is kept." if e.source.get("repo_id")
                  else f"The folder it was converted from ({e.source.get('path', 'on your disk')}) is kept.")
        if not widgets.confirm(self, "Delete converted model",
                               f"Delete {e.name} from your converted models?\n\n{e.path}\n\n{origin}"):
            return
        if self.window.entry is not None and str(self.window.entry.path) == str(e.path):
            self.window.set_entry(None)
        self.window.drop_runners(e.path)

        def run(progress, cancel):
            from app.core import store
            store.delete_entry(e)

        start_task(run, self, name="delete", on_result=lambda _: self.window.refresh_entries(),
                   on_error=lambda err: widgets.show_error(self, err, context=f"Deleting {e.name} failed."))
