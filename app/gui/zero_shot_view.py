"""Try-it view for zero-shot classification: a text and candidate labels typed by the user, both models'
rankings side by side (an NLI classifier scores one hypothesis per label; app/core/tasks/zero_shot.py)."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLineEdit, QPlainTextEdit, QVBoxLayout, QWidget

from app.gui import widgets
from app.gui.try_views import fill_rankings, ranking_columns

SAMPLE_TEXT = "The new phone's battery lasts two days, but the camera struggles in low light."
SAMPLE_LABELS = "technology, sports, politics, cooking, complaint, praise"


class ZeroShotView(QWidget):
    """Text + labels in; each model's labels ranked by score, where INT8's order differs marked in red."""

    def __init__(self, page):
        super().__init__()
        self.page = page
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(widgets.label("Text to classify into labels of your own (no training: an NLI model reads "
                                    "“This example is <label>.” for each one):", "muted", wrap=True))
        self.text_edit = QPlainTextEdit(SAMPLE_TEXT)
        self.text_edit.setAccessibleName("Text to classify")
        self.text_edit.setTabChangesFocus(True)
        self.text_edit.setMaximumHeight(110)
        lay.addWidget(self.text_edit)
        row = QHBoxLayout()
        row.addWidget(widgets.label("Labels:"))
        self.labels_edit = QLineEdit(SAMPLE_LABELS)
        self.labels_edit.setAccessibleName("Candidate labels, comma-separated")
        self.labels_edit.setPlaceholderText("Comma-separated, e.g. sports, politics, science")
        self.labels_edit.returnPressed.connect(self.run)
        row.addWidget(self.labels_edit, 1)
        lay.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(widgets.label("Hypothesis:"))
        from app.core.tasks.zero_shot import DEFAULT_TEMPLATE

        self.template_edit = QLineEdit(DEFAULT_TEMPLATE)
        self.template_edit.setAccessibleName("Hypothesis template, {} is the label")
        row.addWidget(self.template_edit, 1)
        self.multi_label = QCheckBox("Several labels can be true")
        self.multi_label.setAccessibleName("Multi-label: score each label on its own")
        row.addWidget(self.multi_label)
        self.run_button = widgets.primary_button("&Classify", "Score the candidate labels")
        self.run_button.setShortcut("Ctrl+Return")
        self.run_button.clicked.connect(self.run)
        row.addWidget(self.run_button)
        self.pairs_button = widgets.button("Sentence &pairs…", "Classify premise and hypothesis pairs (plain NLI)")
        self.pairs_button.setToolTip("The model's own labels for premise/hypothesis pairs (pick the model again to "
                                     "come back)")
        self.pairs_button.clicked.connect(lambda: self.page.modes.setCurrentIndex(self.page.view_index["classification"]))
        row.addWidget(self.pairs_button)
        lay.addLayout(row)
        self.status = widgets.label("", "muted", wrap=True)
        lay.addWidget(self.status)
        columns, self.tables = ranking_columns("Score", "Label")
        lay.addLayout(columns, 1)

    def clear(self) -> None:
        self.status.setText("")
        for table in self.tables.values():
            table.setRowCount(0)

    @Slot()
    def run(self) -> None:
        from app.core.tasks.zero_shot import ZeroShotRequest, parse_labels

        text = self.text_edit.toPlainText().strip()
        labels = parse_labels(self.labels_edit.text())
        if not text or not labels:
            self.status.setText("Type a text and at least one label (comma-separated).")
            return
        request = ZeroShotRequest(texts=(text,), labels=labels, hypothesis_template=self.template_edit.text(),
                                  multi_label=self.multi_label.isChecked())
        self.status.setText(f"Scoring {len(labels)} labels (one model call each)…")
        self.page.run_view(request, self.show_results, self.run_button)

    def show_results(self, request, a, b) -> None:
        a = a[0]
        b = b[0] if b is not None else None
        def rows(result):
            return None if result is None else [(s.label, s.score, s.label) for s in result.scores]

        fill_rankings(self.tables, rows(a), rows(b))
        words = [f"FP32 {a.latency_ms:.1f} ms"]
        if b is None:
            words.insert(0, "INT8 was not kept for this model (the accuracy guard kept FP32).")
        else:
            same_order = [s.label for s in a.scores] == [s.label for s in b.scores]
            words.insert(0, "Same ranking in both models." if same_order else
                         "Same answer; the order below it differs (in red)." if a.chosen() == b.chosen() else
                         "The models give different answers (in red).")
            words.append(f"INT8 {b.latency_ms:.1f} ms")
        if a.multi_label:
            words.append("each label scored on its own (above 0.5: true)")
        self.status.setText(" · ".join(words))
