"""The main window: a sidebar of five pages (Choose model, Convert, Try it, Compare, Library) over one stack.

The window owns what pages share: the current converted model (a store entry), the list of store entries,
recent models and settings (QSettings). Pages talk to the core only through `app.gui.worker.start_task`.
"""

from __future__ import annotations

import logging
import os
import threading

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QStackedWidget,
                               QVBoxLayout, QWidget)

from app.gui import widgets
from app.gui.worker import start_task, stop_all

log = logging.getLogger(__name__)

PAGES = ("Choose model", "Convert", "Try it", "Compare", "Library")
MAX_RECENT = 10


def entry_label(entry) -> str:
    rev = (getattr(entry, "revision", None) or "")[:7]
    return f"{entry.name}@{rev}" if rev else str(entry.name)


class MainWindow(QMainWindow):
    entry_changed = Signal(object)  # the current store entry (or None)
    entries_changed = Signal(list)  # every store entry

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings if settings is not None else QSettings("PocketNLP", "Pocket NLP")
        self._runners: dict[tuple[str, int | None], tuple] = {}  # (entry path, threads) → (fp32, int8 or None)
        self._runners_lock = threading.Lock()
        self.entry = None
        self.entries: list = []
        self.results: dict = {}
        self.setWindowTitle("Pocket NLP")
        self.setMinimumSize(QSize(960, 640))
        apply_environment(self.settings)

        from app.gui.choose_page import ChoosePage
        from app.gui.compare_page import ComparePage
        from app.gui.convert_page import ConvertPage
        from app.gui.library_page import LibraryPage
        from app.gui.try_page import TryPage

        self.choose = ChoosePage(self)
        self.convert = ConvertPage(self)
        self.try_it = TryPage(self)
        self.compare = ComparePage(self)
        self.library = LibraryPage(self)

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        side = QWidget()
        side.setObjectName("sidebar")
        side.setFixedWidth(210)
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 10)
        brand = QLabel("Pocket NLP")
        brand.setStyleSheet("font-size: 15pt; font-weight: 700; padding: 16px 18px 4px 18px;")
        side_lay.addWidget(brand)
        tag = widgets.label("Smaller, faster models on your laptop", "muted", wrap=True)
        tag.setContentsMargins(18, 0, 12, 8)
        side_lay.addWidget(tag)
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setAccessibleName("Pages")
        self.nav.setFocusPolicy(Qt.StrongFocus)
        for i, name in enumerate(PAGES, start=1):
            item = QListWidgetItem(f"{i}   {name}")
            item.setToolTip(f"{name} (Ctrl+{i})")
            self.nav.addItem(item)
        side_lay.addWidget(self.nav, 1)
        self.current_label = widgets.label("No model converted yet", "muted", wrap=True)
        self.current_label.setAccessibleName("Current model")
        self.current_label.setContentsMargins(18, 0, 12, 0)
        side_lay.addWidget(self.current_label)
        self.job_label = widgets.label("", wrap=True)  # what is running, seen from every page
        self.job_label.setAccessibleName("Running job")
        self.job_label.setContentsMargins(18, 6, 12, 0)
        self.job_label.hide()
        side_lay.addWidget(self.job_label)
        self.settings_button = widgets.button("Settings...", "Settings")
        self.settings_button.clicked.connect(self.open_settings)
        btn_row = QHBoxLayout()
        btn_row.setContentsMargins(14, 6, 14, 0)
        btn_row.addWidget(self.settings_button)
        side_lay.addLayout(btn_row)
        row.addWidget(side)

        self.stack = QStackedWidget()
        for page in (self.choose, self.convert, self.try_it, self.compare, self.library):
            self.stack.addWidget(page)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)

        for i in range(len(PAGES)):
            action = QAction(self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(lambda checked=False, i=i: self.show_page(i))
            self.addAction(action)
        quit_action = QAction(self)
        quit_action.setShortcut(QKeySequence.Quit)
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)

        self.statusBar().showMessage("Ready")
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        QTimer.singleShot(0, self.refresh_entries)  # after the first paint: the scan imports the store

    # --- navigation -------------------------------------------------------------------------------------

    def show_page(self, index_or_name) -> None:
        index = PAGES.index(index_or_name) if isinstance(index_or_name, str) else int(index_or_name)
        self.nav.setCurrentRow(index)
        self.stack.currentWidget().setFocus(Qt.OtherFocusReason)

    def current_page_name(self) -> str:
        return PAGES[self.stack.currentIndex()]

    # --- shared state -----------------------------------------------------------------------------------

    def set_entry(self, entry) -> None:
        self.entry = entry
        self.current_label.setText(f"Current model:\n{entry_label(entry)}" if entry else "No model converted yet")
        self.entry_changed.emit(entry)

    def set_job(self, words: str | None) -> None:
        """Show a running job (conversion, benchmark, evaluation) in the status bar and the sidebar; None: done."""
        self.statusBar().showMessage(words or "Ready")
        self.job_label.setText(f"● {words}" if words else "")
        self.job_label.setVisible(bool(words))

    def refresh_entries(self) -> None:
        """Re-read the store off the GUI thread; pages update from `entries_changed`."""

        self._scan_generation = getattr(self, "_scan_generation", 0) + 1
        generation = self._scan_generation

        def scan(progress, cancel):
            from app.core import store
            entries = store.list_entries()
            return generation, entries, {str(e.path): store.load_results(e) for e in entries if not e.damaged}

        start_task(scan, self, name="list-store", on_result=self._entries_loaded,
                   on_error=lambda e: log.warning("cannot list the store: %s", e))

    def _entries_loaded(self, result) -> None:
        generation, entries, results = result
        if generation != self._scan_generation:  # a slower, older scan: a newer one is on its way
            return
        self.entries = list(entries)
        self.results = results  # entry path → what was measured, kept with it (store.load_results)
        if self.entry is not None:
            same = [e for e in self.entries if str(e.path) == str(self.entry.path)]
            if not same:
                self.set_entry(None)
        self.entries_changed.emit(self.entries)

    def add_recent(self, text: str) -> None:
        recent = [r for r in self.recent() if r != text]
        self.settings.setValue("recent", [text, *recent][:MAX_RECENT])

    def recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def runners(self, entry, threads: int | None) -> tuple:
        """(FP32 runner, INT8 runner or None) of a store entry, loaded once per thread count (from workers)."""
        key = (str(entry.path), threads)
        with self._runners_lock:
            if key not in self._runners:
                from app.core.store import verify_entry
                from app.core.tasks.runner import Runner
                verify_entry(entry)  # sha256 of every file, cached by stat: a damaged entry says so, not a crash
                self._runners[key] = (Runner.load(entry.fp32_dir, threads=threads),
                                      Runner.load(entry.int8_dir, threads=threads) if entry.int8_dir else None)
            return self._runners[key]

    def drop_runners(self, path) -> None:
        with self._runners_lock:
            for key in [k for k in self._runners if k[0] == str(path)]:
                del self._runners[key]

    def threads(self) -> int | None:
        n = int(self.settings.value("threads", 0) or 0)
        return n if n > 0 else None

    def offline(self) -> bool:
        from app.core.hub import hub_offline
        return hub_offline()

    @Slot()
    def open_settings(self) -> None:
        from app.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(self._settings_changed)
        dialog.open()
        self._settings_dialog = dialog

    @Slot()
    def _settings_changed(self) -> None:
        apply_environment(self.settings)
        from app.gui.widgets import apply_theme
        from PySide6.QtWidgets import QApplication

        apply_theme(QApplication.instance(), str(self.settings.value("theme", "system")))
        self.choose.update_offline()
        self.refresh_entries()

    def busy(self) -> bool:
        return self.convert.running()

    def closeEvent(self, event) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        stop_all()
        super().closeEvent(event)


def apply_environment(settings: QSettings) -> None:
    """Settings the core reads from the environment at call time: store location, offline mode, Hub token."""
    store = str(settings.value("store_location", "") or "")
    if store:
        os.environ["POCKET_NLP_HOME"] = store
    offline = str(settings.value("offline", "false")).lower() in ("true", "1")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    elif settings.contains("offline") and os.environ.get("POCKET_NLP_OFFLINE_FROM_SETTINGS"):
        os.environ.pop("HF_HUB_OFFLINE", None)
    if offline:
        os.environ["POCKET_NLP_OFFLINE_FROM_SETTINGS"] = "1"
    else:
        os.environ.pop("POCKET_NLP_OFFLINE_FROM_SETTINGS", None)
    token = str(settings.value("hub_token", "") or "")
    if token:
        os.environ["HF_TOKEN"] = token
