"""Shared GUI bits: themes, page headers, cards, probability bars, the error dialog and plain-words formatting."""

from __future__ import annotations

import logging
import traceback

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QDialog, QDialogButtonBox, QFrame, QGridLayout,
                               QHBoxLayout, QHeaderView, QLabel, QMessageBox, QPlainTextEdit, QProgressBar,
                               QPushButton, QSizePolicy, QTableWidget, QVBoxLayout, QWidget)

log = logging.getLogger(__name__)

FP32_COLOR = "#5b7db1"  # calm blue for the original model
INT8_COLOR = "#e07b39"  # warm orange for the small one
ACCENT = "#2f7d6d"

# --- formatting ---------------------------------------------------------------------------------------------


def task_title(name: str) -> str:
    """'token-classification' → 'Named entities', as the task plug-in says it."""
    from app.core.tasks import TASKS, get_task

    return get_task(name).title if name in TASKS else name


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def human_seconds(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "–"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# --- theme --------------------------------------------------------------------------------------------------

def _palette(dark: bool) -> QPalette:
    p = QPalette()
    if dark:
        base, window, text, mid = QColor("#1e2125"), QColor("#25282d"), QColor("#e6e6e6"), QColor("#3a3f46")
        alt, button, highlight = QColor("#2a2e34"), QColor("#30343a"), QColor("#3f8f7f")
        disabled = QColor("#8a8f96")
        link = QColor("#7fc4b4")
    else:
        base, window, text, mid = QColor("#ffffff"), QColor("#f3f4f6"), QColor("#1d1f23"), QColor("#c9ccd1")
        alt, button, highlight = QColor("#f7f8fa"), QColor("#ffffff"), QColor(ACCENT)
        disabled = QColor("#80858c")
        link = QColor("#1f6b5c")
    for role, color in ((QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base),
                        (QPalette.AlternateBase, alt), (QPalette.Text, text), (QPalette.Button, button),
                        (QPalette.ButtonText, text), (QPalette.Highlight, highlight),
                        (QPalette.HighlightedText, QColor("#ffffff")), (QPalette.ToolTipBase, base),
                        (QPalette.ToolTipText, text), (QPalette.PlaceholderText, disabled), (QPalette.Mid, mid),
                        (QPalette.Link, link), (QPalette.BrightText, QColor("#ffffff"))):
        p.setColor(role, color)
    for role in (QPalette.Text, QPalette.WindowText, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, disabled)
    return p


def is_dark() -> bool:
    app = QApplication.instance()
    return bool(app) and app.palette().color(QPalette.Window).lightness() < 128


def apply_theme(app: QApplication, theme: str = "system") -> str:
    """Fusion style with our light or dark palette; 'system' follows the desktop's colour scheme."""
    if theme not in ("light", "dark"):
        scheme = app.styleHints().colorScheme()
        theme = "dark" if scheme == Qt.ColorScheme.Dark else "light"
    dark = theme == "dark"
    app.setStyle("Fusion")
    app.setPalette(_palette(dark))
    card = "#2a2e34" if dark else "#ffffff"
    border = "#3a3f46" if dark else "#dcdfe4"
    muted = "#a9aeb5" if dark else "#5c626b"
    nav_sel = "#33403d" if dark else "#e2efec"
    app.setStyleSheet(f"""
        QLabel[role="title"] {{ font-size: 20pt; font-weight: 600; }}
        QLabel[role="subtitle"] {{ color: {muted}; font-size: 10.5pt; }}
        QLabel[role="section"] {{ font-size: 12pt; font-weight: 600; margin-top: 6px; }}
        QLabel[role="muted"] {{ color: {muted}; }}
        QLabel[role="big"] {{ font-size: 15pt; font-weight: 600; }}
        QFrame[role="card"] {{ background: {card}; border: 1px solid {border}; border-radius: 8px; }}
        QFrame[role="card"] QLabel {{ background: transparent; border: none; }}
        QFrame[role="banner"] {{ background: {'#4a3f1f' if dark else '#fff4d6'}; border: 1px solid
            {'#7a6630' if dark else '#e8cf85'}; border-radius: 6px; }}
        QWidget#sidebar {{ background: {'#1b1d21' if dark else '#e9ebef'}; }}
        QWidget#sidebar QLabel {{ background: transparent; }}
        QDialogButtonBox {{ dialogbuttonbox-buttons-have-icons: 0; }}
        QTabWidget::pane {{ border: none; border-top: 1px solid {border}; }}
        QFrame[role="rule"] {{ background: {border}; border: none; }}
        QLabel[role="headline"] {{ font-size: 17pt; font-weight: 700; color: {'#7fc4b4' if dark else ACCENT}; }}
        QLabel[role="figure"] {{ font-size: 22pt; font-weight: 700; color: {'#7fc4b4' if dark else ACCENT}; }}
        QListWidget#nav {{ border: none; background: {'#1b1d21' if dark else '#e9ebef'}; font-size: 11pt;
            outline: 0; padding-top: 8px; }}
        QListWidget#nav::item {{ padding: 10px 14px; border-radius: 6px; margin: 2px 8px; }}
        QListWidget#nav::item:selected {{ background: {nav_sel}; color: {'#e6e6e6' if dark else '#1d1f23'};
            font-weight: 600; }}
        QPushButton[role="primary"] {{ background: {ACCENT}; color: white; border: 1px solid {ACCENT};
            border-radius: 5px; padding: 6px 16px; font-weight: 600; }}
        QPushButton[role="primary"]:hover {{ background: #28695c; }}
        QPushButton[role="primary"]:disabled {{ background: {'#3a4a46' if dark else '#a9cbc3'};
            border-color: transparent; color: {'#8a9a96' if dark else '#eef5f3'}; }}
        QPushButton[role="primary"]:focus {{ border: 2px solid {'#9fe0d0' if dark else '#173f37'}; }}
    """)
    return theme


# --- building blocks ----------------------------------------------------------------------------------------

def label(text: str = "", role: str | None = None, *, wrap: bool = False, selectable: bool = False) -> QLabel:
    w = QLabel(text)
    if role:
        w.setProperty("role", role)
    w.setWordWrap(wrap)
    if selectable:
        w.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return w


def primary_button(text: str, accessible: str | None = None) -> QPushButton:
    b = QPushButton(text)
    b.setProperty("role", "primary")
    b.setAccessibleName(accessible or text.replace("&", "").rstrip("."))
    b.setCursor(Qt.PointingHandCursor)
    return b


def button(text: str, accessible: str | None = None) -> QPushButton:
    b = QPushButton(text)
    b.setAccessibleName(accessible or text.replace("&", "").rstrip("."))
    return b


def page_layout(page: QWidget, title: str, subtitle: str) -> QVBoxLayout:
    """The layout every page starts with: the same margins, then its title and a plain-words subtitle."""
    lay = QVBoxLayout(page)
    lay.setContentsMargins(28, 22, 28, 20)
    lay.setSpacing(10)
    lay.addWidget(page_header(title, subtitle))
    return lay


def data_table(headers: list[str], name: str, *, stretch: int = -1) -> QTableWidget:
    """A read-only, row-selecting table; `stretch` is the column that takes the spare width."""
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.setAccessibleName(name)
    t.setSelectionBehavior(QAbstractItemView.SelectRows)
    t.setSelectionMode(QAbstractItemView.SingleSelection)
    t.setEditTriggers(QAbstractItemView.NoEditTriggers)
    t.verticalHeader().hide()
    t.setAlternatingRowColors(True)
    t.setShowGrid(False)
    t.setWordWrap(False)
    t.setTabKeyNavigation(False)
    t.verticalHeader().setDefaultSectionSize(30)
    header = t.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeToContents)
    header.setSectionResizeMode(stretch % len(headers), QHeaderView.Stretch)
    header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    return t


def page_header(title: str, subtitle: str) -> QWidget:
    w = QWidget()
    lay = QVBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 8)
    lay.setSpacing(2)
    lay.addWidget(label(title, "title"))
    lay.addWidget(label(subtitle, "subtitle", wrap=True))
    return w


class ElidedLabel(QLabel):
    """One line of text, elided with '…' to the width it gets; the full text is the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(text if len(text) > 40 else "")
        self._elide()

    def text(self) -> str:  # noqa: D401 - what the user would read in full
        return self._full

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(20, self.width() - 4)
        super().setText(self.fontMetrics().elidedText(self._full, Qt.ElideRight, width))


class Card(QFrame):
    """A rounded panel; `body` is its vertical layout."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setProperty("role", "card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(16, 14, 16, 14)
        self.body.setSpacing(8)


class Banner(QFrame):
    """A one-line notice (offline mode and the like)."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setProperty("role", "banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 8, 12, 8)
        self.text = label(text, wrap=True)
        self.text.setAccessibleName("Notice")
        lay.addWidget(self.text, 1)

    def setText(self, text: str) -> None:
        self.text.setText(text)


VERDICT_COLORS = {"Ready to use": "#2f7d6d", "Check on your data": "#a86a12", "Keep FP32": "#b83232"}


class VerdictBadge(QFrame):
    """The verdict (app.core.verdict): a coloured badge and one plain sentence; hidden when there is none."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(10)
        self.badge = QLabel("")
        self.badge.setAccessibleName("Verdict")
        self.sentence = label("", wrap=True, selectable=True)
        self.sentence.setAccessibleName("Why")
        lay.addWidget(self.badge, 0, Qt.AlignTop)
        lay.addWidget(self.sentence, 1)
        self.hide()

    def set_verdict(self, verdict) -> None:
        if verdict is None:
            self.hide()
            return
        color = VERDICT_COLORS.get(verdict.badge, "#5c626b")
        self.badge.setText(verdict.badge)
        self.badge.setStyleSheet(f"background: {color}; color: white; font-weight: 700; padding: 3px 12px; "
                                 "border-radius: 11px;")
        basis = ("measured on your data" if verdict.evidence.get("your_data")
                 else "from the built-in test examples only")
        self.sentence.setText(f"{verdict.sentence} ({basis})")
        self.setToolTip("Ready to use: INT8 answers like FP32 on enough of your own labelled examples.\n"
                        "Check on your data: not enough evidence yet, or a small difference to look at.\n"
                        "Keep FP32: INT8 changes the answers too much.")
        self.show()


class SummaryCard(Card):
    """The plain-words result of a conversion: a headline, three big figures and a sentence."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.headline = label("", "big", wrap=True)
        self.headline.setAccessibleName("Summary")
        self.body.addWidget(self.headline)
        self.verdict = VerdictBadge()
        self.body.addWidget(self.verdict)
        grid = QGridLayout()
        grid.setHorizontalSpacing(28)
        self.figures: list[tuple[QLabel, QLabel]] = []
        for col in range(3):
            value, caption = label("", "figure"), label("", "muted")
            grid.addWidget(value, 0, col)
            grid.addWidget(caption, 1, col)
            self.figures.append((value, caption))
        grid.setColumnStretch(3, 1)
        self.body.addLayout(grid)
        self.sentence = label("", "muted", wrap=True, selectable=True)
        self.body.addWidget(self.sentence)
        self.details_link = label('<a href="#details">Details: the settings the accuracy guard chose</a>')
        self.details_link.linkActivated.connect(lambda _: self.technical.setVisible(not self.technical.isVisible()))
        self.body.addWidget(self.details_link)
        self.technical = label("", "muted", wrap=True, selectable=True)
        self.technical.setAccessibleName("Technical details")
        self.technical.hide()
        self.body.addWidget(self.technical)

    def show_summary(self, headline: str, figures: list[tuple[str, str]], sentence: str,
                     technical: str = "") -> None:
        """Plain words first; the technical sentence behind the Details link."""
        self.headline.setText(headline)
        for (value, caption), (v, c) in zip(self.figures, figures + [("", "")] * 3):
            value.setText(v)
            caption.setText(c)
        self.sentence.setText(sentence)
        self.technical.setText(technical)
        self.technical.hide()
        self.details_link.setVisible(bool(technical))


class ProbabilityBars(QWidget):
    """Labels with a bar each (best first); the best one is drawn bold."""

    def __init__(self, color: str, parent: QWidget | None = None, *, max_rows: int = 5):
        super().__init__(parent)
        self.color = color
        self.max_rows = max_rows
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(3)
        self.grid.setColumnStretch(1, 1)

    def set_scores(self, scores: list[tuple[str, float]]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for row, (name, score) in enumerate(scores[: self.max_rows]):
            name_label = label(name)
            name_label.setMinimumWidth(70)
            if row == 0:
                name_label.setStyleSheet("font-weight: 600;")
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(max(0.0, min(1.0, score)) * 1000)))
            bar.setTextVisible(False)
            bar.setFixedHeight(12)
            bar.setStyleSheet(f"QProgressBar {{ border: none; border-radius: 6px; background: rgba(128,128,128,0.2); }}"
                              f"QProgressBar::chunk {{ border-radius: 6px; background: {self.color}; }}")
            bar.setAccessibleName(f"{name} probability")
            bar.setAccessibleDescription(f"{score:.1%}")
            pct = label(f"{score:.1%}")
            pct.setMinimumWidth(52)
            pct.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.grid.addWidget(name_label, row, 0)
            self.grid.addWidget(bar, row, 1)
            self.grid.addWidget(pct, row, 2)


def hline() -> QFrame:
    f = QFrame()
    f.setProperty("role", "rule")
    f.setFixedHeight(1)
    return f


# --- errors -------------------------------------------------------------------------------------------------

ERROR_TITLES = {
    "NotAModelFolderError": "Not a model folder", "DamagedEntryError": "This converted model is damaged",
    "BenchError": "The measurement failed",
    "ModelNotFoundError": "Model not found", "OfflineError": "Cannot reach the Hugging Face Hub",
    "AccessDeniedError": "Access denied", "UnsupportedModelError": "This model cannot be converted",
    "InvalidModelError": "The model files are broken", "ExportError": "Export failed",
    "QuantizationError": "Quantization failed", "StoreError": "Cannot write the model store",
    "InputError": "Check the input", "CancelledError": "Cancelled",
}


def error_title(e: BaseException) -> str:
    """The most specific title of the error's class or its bases."""
    return next((ERROR_TITLES[c.__name__] for c in type(e).__mro__ if c.__name__ in ERROR_TITLES),
                "Something went wrong")


class ErrorDialog(QDialog):
    """The core's message in plain words; the technical details (type, traceback) behind a button."""

    def __init__(self, e: BaseException, parent: QWidget | None = None, *, context: str = "", retry=None):
        super().__init__(parent)
        self.error = e
        self.setWindowTitle(error_title(e))
        self.setAccessibleName("Error")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        head = label(error_title(e), "section")
        lay.addWidget(head)
        message = str(e) or type(e).__name__
        if context:
            message = f"{context}\n\n{message}"
        self.message = label(message, wrap=True, selectable=True)
        self.message.setAccessibleName("Error message")
        self.message.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        lay.addWidget(self.message)
        lay.addSpacing(6)
        supported = getattr(e, "supported", ())
        if supported:  # what Pocket NLP converts, behind a link instead of inside the message
            link = label('<a href="#supported">What Pocket NLP supports</a>')
            link.setOpenExternalLinks(False)
            link.linkActivated.connect(lambda _: self._show_details())
            lay.addWidget(link)
        details = (f"{type(e).__name__}: {e}\n\n" + ("Pocket NLP converts:\n  " + "\n  ".join(supported) + "\n\n"
                                                      if supported else "")
                   + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        self.details = QPlainTextEdit(details)
        self.details.setReadOnly(True)
        self.details.setAccessibleName("Error details")
        self.details.setMinimumHeight(180)
        self.details.hide()
        lay.addWidget(self.details)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok)
        self.toggle = buttons.addButton("Show details", QDialogButtonBox.ActionRole)
        self.toggle.setAccessibleName("Show details")
        self.toggle.clicked.connect(self._toggle)
        self.copy = buttons.addButton("Copy details", QDialogButtonBox.ActionRole)
        self.copy.setAccessibleName("Copy details")
        self.copy.clicked.connect(self._copy)
        self.retry = None
        if retry is not None:  # the same action again, e.g. after plugging the network back in
            self.retry = buttons.addButton("Try again", QDialogButtonBox.AcceptRole)
            self.retry.setAccessibleName("Try again")
            self.retry.clicked.connect(retry)
        buttons.accepted.connect(self.accept)
        lay.addWidget(buttons)
        buttons.button(QDialogButtonBox.Ok).setFocus()

    def _toggle(self) -> None:
        self.details.setVisible(not self.details.isVisible())
        self.toggle.setText("Hide details" if self.details.isVisible() else "Show details")
        self.adjustSize()

    def _show_details(self) -> None:
        if not self.details.isVisible():
            self._toggle()

    def _copy(self) -> None:
        from PySide6.QtWidgets import QApplication

        QApplication.clipboard().setText(f"{self.message.text()}\n\n{self.details.toPlainText()}")
        self.copy.setText("Copied")


def show_error(parent: QWidget | None, e: BaseException, *, context: str = "", retry=None) -> ErrorDialog:
    """Log the error and open a non-blocking dialog (the window stays responsive); `retry` adds Try again."""
    log.error("%s%s: %s", f"{context} " if context else "", type(e).__name__, e)
    dialog = ErrorDialog(e, parent, context=context, retry=retry)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    dialog.open()
    return dialog


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    """A yes/no question (tests replace this function)."""
    return QMessageBox.question(parent, title, text, QMessageBox.Yes | QMessageBox.No,
                                QMessageBox.No) == QMessageBox.Yes
