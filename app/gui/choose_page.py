"""Choose a model: type an id, pick a suggestion, search the Hub, or take one already on this computer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLineEdit,
                               QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from app.gui import widgets
from app.gui.worker import start_task

log = logging.getLogger(__name__)

CURATED = Path(__file__).resolve().parents[2] / "models" / "curated.json"


def load_curated(path: Path = CURATED) -> list[dict]:
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["models"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("no curated model list at %s (%s)", path, e)
        return []


def _item(text: str, data=None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if data is not None:
        item.setData(Qt.UserRole, data)
    return item


class ChoosePage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.search_task = None
        self.hits: list = []
        lay = widgets.page_layout(
            self, "Choose a model", "Pick a Hugging Face model for text classification, zero-shot labels, question "
            "answering, named entities, sentence similarity and search, or text generation. Pocket NLP converts it to "
            "run without PyTorch and makes a smaller INT8 copy you can compare.")
        self.banner = widgets.Banner()
        self.banner.hide()
        lay.addWidget(self.banner)

        card = widgets.Card()
        card.body.addWidget(widgets.label("Model", "section"))
        row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Hub id (org/name), huggingface.co link, or a folder on this computer")
        self.model_edit.setAccessibleName("Model id, link or folder")
        self.model_edit.setClearButtonEnabled(True)
        self.model_edit.returnPressed.connect(self.convert_clicked)
        self.model_edit.textChanged.connect(self._update_buttons)
        row.addWidget(self.model_edit, 1)
        self.open_button = widgets.button("Open &folder...", "Open a model folder")
        self.open_button.clicked.connect(self.open_folder)
        row.addWidget(self.open_button)
        self.convert_button = widgets.primary_button("&Convert", "Convert the model")
        self.convert_button.clicked.connect(self.convert_clicked)
        row.addWidget(self.convert_button)
        card.body.addLayout(row)
        self.recent_combo = QComboBox()
        self.recent_combo.setAccessibleName("Recent models")
        self.recent_combo.setMinimumWidth(360)
        self.recent_combo.activated.connect(self._recent_picked)
        recent_row = QHBoxLayout()
        recent_row.addWidget(widgets.label("Recent:", "muted"))
        recent_row.addWidget(self.recent_combo)
        recent_row.addStretch(1)
        card.body.addLayout(recent_row)
        self.fit_label = widgets.label("", "muted", wrap=True)  # download, memory, latency expected here
        self.fit_label.setAccessibleName("How it fits this computer")
        self.fit_label.hide()
        card.body.addWidget(self.fit_label)
        self.model_edit.textChanged.connect(self._update_fit)
        lay.addWidget(card)

        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Where to find models")
        self.tabs.setDocumentMode(True)
        # Suggested
        self.curated = load_curated()
        self.curated_table = widgets.data_table(["Model", "Task", "What it does"], "Suggested models")
        for m in self.curated:
            r = self.curated_table.rowCount()
            self.curated_table.insertRow(r)
            title = _item(m.get("title", m["id"]), m["id"])
            title.setToolTip(m["id"])
            self.curated_table.setItem(r, 0, title)
            self.curated_table.setItem(r, 1, _item(widgets.task_title(m.get("task", ""))))
            self.curated_table.setItem(r, 2, _item(f"{m.get('note', '')}  ({m['id']})"))
        self._wire(self.curated_table)
        self.tabs.addTab(self.curated_table, "Suggested")

        # Search the Hub
        search = QWidget()
        s_lay = QVBoxLayout(search)
        s_lay.setContentsMargins(0, 8, 0, 0)
        s_row = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search the Hugging Face Hub, e.g. sentiment, squad, emotion")
        self.search_edit.setAccessibleName("Search the Hub")
        self.search_edit.returnPressed.connect(self.search)
        self.task_combo = QComboBox()
        from app.core.tasks import all_tasks

        for task in all_tasks():
            self.task_combo.addItem(task.title, task.name)
        self.task_combo.setAccessibleName("Task")
        self.search_button = widgets.button("&Search", "Search the Hub")
        self.search_button.clicked.connect(self.search)
        s_row.addWidget(self.search_edit, 1)
        s_row.addWidget(self.task_combo)
        s_row.addWidget(self.search_button)
        self.search_cancel = widgets.button("Cancel", "Cancel the search")
        self.search_cancel.clicked.connect(self.cancel_search)
        self.search_cancel.hide()
        s_row.addWidget(self.search_cancel)
        s_lay.addLayout(s_row)
        from PySide6.QtWidgets import QProgressBar
        self.search_busy = QProgressBar()
        self.search_busy.setRange(0, 0)  # a spinner: a search has no known length
        self.search_busy.setFixedHeight(6)
        self.search_busy.setTextVisible(False)
        self.search_busy.setAccessibleName("Searching")
        self.search_busy.hide()
        s_lay.addWidget(self.search_busy)
        self.search_status = widgets.label("Most downloaded models first. Only models marked “Yes” can be "
                                           "converted.", "muted", wrap=True)
        s_lay.addWidget(self.search_status)
        self.search_table = widgets.data_table(["Model", "Task", "Downloads", "Can convert"], "Search results")
        self._wire(self.search_table)
        s_lay.addWidget(self.search_table, 1)
        self.tabs.addTab(search, "Search the Hub")

        # On this computer
        local = QWidget()
        l_lay = QVBoxLayout(local)
        l_lay.setContentsMargins(0, 8, 0, 0)
        self.local_status = widgets.label("Models in your Hugging Face cache and models Pocket NLP already "
                                          "converted. These work offline.", "muted", wrap=True)
        l_lay.addWidget(self.local_status)
        self.local_table = widgets.data_table(["Model", "Where", "Size"], "Models on this computer")
        self._wire(self.local_table)
        l_lay.addWidget(self.local_table, 1)
        self.tabs.addTab(local, "On this computer")
        lay.addWidget(self.tabs, 1)

        window.entries_changed.connect(self._entries_changed)
        self.cached: list = []
        self.update_offline()
        self.refresh_recent()
        QTimer.singleShot(0, self.refresh_cached)
        self._update_buttons()

    # --- wiring ---------------------------------------------------------------------------------------------

    def _wire(self, table: QTableWidget) -> None:
        table.itemSelectionChanged.connect(lambda t=table: self._picked(t))
        table.itemActivated.connect(lambda item, t=table: self._activated(t))

    def _row_data(self, table: QTableWidget):
        rows = table.selectionModel().selectedRows()
        if not rows:
            return None
        return table.item(rows[0].row(), 0).data(Qt.UserRole)

    def _picked(self, table: QTableWidget) -> None:
        data = self._row_data(table)
        if isinstance(data, str):
            self.model_edit.setText(data)
        elif data is not None and hasattr(data, "fp32_dir"):
            self.model_edit.setText(str(data.name))

    def _activated(self, table: QTableWidget) -> None:
        data = self._row_data(table)
        if data is not None and hasattr(data, "fp32_dir"):  # already converted: go and try it
            self.window.set_entry(data)
            self.window.show_page("Try it")
        elif data:
            self.convert_clicked()

    def checkpoint_bytes(self, text: str) -> int | None:
        """The FP32 size of what `text` names, where it is known without the network: a suggested model, a model
        in the HF cache, a folder on disk (FP16 weights count double)."""
        import json
        from pathlib import Path

        sizes = {m["id"]: m.get("size_mb") for m in self.curated}
        if sizes.get(text):
            return int(sizes[text] * 1e6)
        cached = [c for c in getattr(self, "cached", []) if text in (c.repo_id, f"{c.repo_id}@{c.revision[:7]}")]
        if cached:
            return int(cached[0].size)
        folder = Path(text).expanduser()
        if text and folder.is_dir() and (folder / "config.json").is_file():
            total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                config = {}
            half = str(config.get("torch_dtype") or config.get("dtype") or "") in ("float16", "bfloat16")
            return total * (2 if half else 1) or None
        return None

    @Slot()
    def _update_fit(self) -> None:
        size = self.checkpoint_bytes(self.model_edit.text().strip())
        if not size:
            self.fit_label.hide()
            return
        self.fit_generation = generation = getattr(self, "fit_generation", 0) + 1

        def run(progress, cancel):
            from app.core.fit import estimate
            return generation, estimate(size)  # measures this CPU once, off the GUI thread

        start_task(run, self, name="fit", on_result=self._fit_done, on_error=lambda e: self.fit_label.hide())

    def _fit_done(self, out) -> None:
        generation, fit = out
        if generation == self.fit_generation:
            self.fit_label.setText(("✓ " if fit.runs_well else "⚠ ") + fit.words)
            self.fit_label.show()

    def _update_buttons(self) -> None:
        typed, busy = bool(self.model_edit.text().strip()), self.window_busy()
        self.convert_button.setEnabled(typed and not busy)
        self.convert_button.setToolTip("A conversion is running; wait for it or cancel it on the Convert page."
                                       if busy else "" if typed else
                                       "Type a Hub id or URL, pick a suggested model, or open a folder first.")

    def window_busy(self) -> bool:
        convert = getattr(self.window, "convert", None)
        return bool(convert and convert.running())

    # --- actions --------------------------------------------------------------------------------------------

    @Slot()
    def convert_clicked(self) -> None:
        text = self.model_edit.text().strip()
        if not text or self.window_busy():
            return
        self.window.convert.start(text)

    @Slot()
    def open_folder(self) -> None:
        folder = self.ask_folder()
        if folder:
            self.model_edit.setText(folder)

    def ask_folder(self) -> str:
        return QFileDialog.getExistingDirectory(self, "Open a model folder (with config.json and model.safetensors)")

    def refresh_recent(self) -> None:
        self.recent_combo.clear()
        recent = self.window.recent()
        if not recent:
            self.recent_combo.addItem("No recent models yet")
            self.recent_combo.setEnabled(False)
            return
        self.recent_combo.setEnabled(True)
        self.recent_combo.addItems(recent)
        self.recent_combo.setCurrentIndex(-1)
        self.recent_combo.setPlaceholderText("Pick a model you used before")

    def _recent_picked(self, index: int) -> None:
        if index >= 0 and self.recent_combo.isEnabled():
            self.model_edit.setText(self.recent_combo.itemText(index))

    def update_offline(self) -> None:
        offline = self.window.offline()
        if offline:
            self.banner.setText("You are offline. Pocket NLP will not contact the Hugging Face Hub: pick a model "
                                "from “On this computer” or open a folder.")
        self.banner.setVisible(offline)
        self.search_button.setEnabled(not offline)
        self.search_edit.setEnabled(not offline)
        if offline:
            self.tabs.setCurrentIndex(2)

    @Slot()
    def search(self) -> None:
        if self.search_task is not None and self.search_task.running:
            return
        query, task = self.search_edit.text().strip(), self.task_combo.currentData()
        self.search_status.setText(f"Searching the Hub for “{query or 'everything'}”…")
        self.search_button.setEnabled(False)
        self.search_busy.show()
        self.search_cancel.show()
        self.search_generation = generation = getattr(self, "search_generation", 0) + 1

        def run(progress, cancel):
            from app.core.hub import search_models
            return generation, search_models(query, task, limit=40)

        self.search_task = start_task(run, self, name="search", on_result=self._search_done,
                                      on_error=lambda e: self._search_failed(e, generation),
                                      on_finished=self._search_finished)

    @Slot()
    def cancel_search(self) -> None:
        """Stop waiting: the request ends on its own in the background and its answer is dropped."""
        self.search_generation = getattr(self, "search_generation", 0) + 1
        self.search_status.setText("Search cancelled.")
        self._search_finished()
        self.search_task = None

    def _search_finished(self) -> None:
        self.search_busy.hide()
        self.search_cancel.hide()
        self.search_button.setEnabled(not self.window.offline())

    def _search_done(self, out) -> None:
        generation, hits = out
        if generation != self.search_generation:  # cancelled, or a newer search is on its way
            return
        self.hits = list(hits)
        t = self.search_table
        t.setRowCount(0)
        for h in self.hits:
            r = t.rowCount()
            t.insertRow(r)
            t.setItem(r, 0, _item(h.repo_id, h.repo_id))
            t.setItem(r, 1, _item(widgets.task_title(h.task)))
            downloads = _item(f"{h.downloads:,}")
            downloads.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            t.setItem(r, 2, downloads)
            t.setItem(r, 3, _item("Yes" if h.convertible else f"No: {h.reason}"))
        n_ok = sum(h.convertible for h in self.hits)
        self.search_status.setText(f"{len(self.hits)} models found, {n_ok} can be converted." if self.hits
                                   else "No models found. Try other words.")

    def _search_failed(self, e, generation: int | None = None) -> None:
        if generation is not None and generation != self.search_generation:
            return
        self.search_status.setText(f"The search did not work: {e}")
        if type(e).__name__ != "OfflineError":
            widgets.show_error(self, e, context="Searching the Hub failed.")

    def refresh_cached(self) -> None:
        def scan(progress, cancel):
            from app.core.hub import cached_models
            return cached_models()

        start_task(scan, self, name="scan-cache", on_result=self._cached_loaded,
                   on_error=lambda e: log.warning("cannot read the HF cache: %s", e))

    def _cached_loaded(self, cached) -> None:
        self.cached = list(cached)
        self._fill_local()

    def _entries_changed(self, entries) -> None:
        self._fill_local()

    def _fill_local(self) -> None:
        t = self.local_table
        t.setRowCount(0)
        for e in self.window.entries:
            r = t.rowCount()
            t.insertRow(r)
            if e.damaged:  # listed, not opened: the Library says what to do
                t.setItem(r, 0, _item(str(e.name), str(e.source.get("ref") or e.name)))
                t.setItem(r, 1, _item("Damaged: double-click to convert it again"))
                t.setItem(r, 2, _item(""))
                continue
            t.setItem(r, 0, _item(str(e.name), e))
            status = _item("Converted, " + ("stale: convert it again" if e.stale else "double-click to try it"))
            status.setToolTip(f"Stale: {e.stale}." if e.stale else "")
            t.setItem(r, 1, status)
            t.setItem(r, 2, _item(""))
        for c in self.cached:
            r = t.rowCount()
            t.insertRow(r)
            label = c.repo_id if "main" in (c.refs or ()) else f"{c.repo_id}@{c.revision[:7]}"
            t.setItem(r, 0, _item(label, label))
            t.setItem(r, 1, _item("Hugging Face cache"))
            t.setItem(r, 2, _item(widgets.human_bytes(c.size)))
        self.local_status.setText(
            "Models in your Hugging Face cache and models Pocket NLP already converted. These work offline."
            if t.rowCount() else "Nothing here yet. Models you convert, and models in your Hugging Face cache, "
            "show up here and work offline. Use “Open folder...” for a model folder on this computer.")
        t.horizontalHeader().setVisible(t.rowCount() > 0)
