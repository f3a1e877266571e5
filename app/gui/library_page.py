"""Library: the converted models in the store — open in Try it, compare, reveal on disk, delete."""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QHBoxLayout, QTableWidgetItem,
                               QWidget)

from app.gui import widgets
from app.gui.convert_page import folder_bytes
from app.gui.worker import start_task

log = logging.getLogger(__name__)


class LibraryPage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.entries: list = []
        lay = widgets.page_layout(
            self, "Library", "Models you converted. They work offline; open one to try it or compare it again.")
        self.where = widgets.label("", "muted", selectable=True)
        lay.addWidget(self.where)
        self.table = widgets.data_table(["Model", "Task", "Revision", "FP32", "INT8", "Converted"],
                                        "Converted models", stretch=0)
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
        self.reveal_button = widgets.button("Show on &disk", "Show the model folder on disk")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.delete_button = widgets.button("&Delete...", "Delete the converted model")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = widgets.button("Re&fresh", "Refresh the list")
        self.refresh_button.clicked.connect(window.refresh_entries)
        for b in (self.open_button, self.compare_button, self.reveal_button, self.delete_button):
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
            t.setItem(r, 1, QTableWidgetItem(widgets.task_title(e.task)))
            t.setItem(r, 2, QTableWidgetItem((e.revision or "local")[:10]))
            t.setItem(r, 3, QTableWidgetItem(widgets.human_bytes(folder_bytes(e.fp32_dir))))
            t.setItem(r, 4, QTableWidgetItem(widgets.human_bytes(folder_bytes(e.int8_dir)) if e.int8_dir
                                             else "not kept"))
            try:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.path.stat().st_mtime))
            except OSError:
                when = ""
            t.setItem(r, 5, QTableWidgetItem(when))
        self.empty.setVisible(not self.entries)
        self._update_buttons()

    def selected(self):
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.UserRole) if rows else None

    def select(self, index: int) -> None:
        self.table.selectRow(index)

    def _update_buttons(self) -> None:
        has = self.selected() is not None
        for b in (self.open_button, self.compare_button, self.reveal_button, self.delete_button):
            b.setEnabled(has)

    @Slot()
    def open_selected(self) -> None:
        self._show_selected("Try it")

    @Slot()
    def compare_selected(self) -> None:
        self._show_selected("Compare")

    def _show_selected(self, page: str) -> None:
        e = self.selected()
        if e is not None:
            self.window.set_entry(e)
            self.window.show_page(page)

    @Slot()
    def reveal_selected(self) -> None:
        e = self.selected()
        if e is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(e.path)))

    @Slot()
    def delete_selected(self) -> None:
        e = self.selected()
        if e is None or self.window.busy():
            return
        if not widgets.confirm(self, "Delete converted model",
                               f"Delete {e.name} from your converted models?\n\n{e.path}\n\nThe original model "
                               "in your Hugging Face cache is kept."):
            return
        if self.window.entry is not None and str(self.window.entry.path) == str(e.path):
            self.window.set_entry(None)
        self.window.drop_runners(e.path)

        def run(progress, cancel):
            from app.core import store
            store.delete_entry(e)

        start_task(run, self, name="delete", on_result=lambda _: self.window.refresh_entries(),
                   on_error=lambda err: widgets.show_error(self, err, context=f"Deleting {e.name} failed."))
