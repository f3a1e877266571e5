"""Compare: size, load time, memory, latency, throughput, agreement and accuracy, FP32 vs INT8, with charts.

Benchmarks and evaluations run in workers; the table and the report share `app.core.report`'s plain-words
rows. QtCharts is imported only when the first results arrive (start-up stays fast).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QProgressBar,
                               QScrollArea, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.gui import widgets
from app.gui.main_window import entry_label
from app.gui.worker import start_task

log = logging.getLogger(__name__)


def _spin(lo: int, hi: int, value: int, name: str, special: str | None = None) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setAccessibleName(name)
    if special:
        s.setSpecialValueText(special)
    return s


class ComparePage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.entry = None
        self.bench = None  # BenchResult.to_dict()
        self.evaluation = None  # EvalResult.to_dict()
        self.task = None
        self.charts_widget = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        lay = widgets.page_layout(
            body, "Compare", "Measure both models on this computer: how big they are, how fast they load and answer, "
            "and, with a labelled file, how often INT8 gives the same answer.")
        self.model_label = widgets.label("No model yet: convert one first.", "section")
        self.model_label.setAccessibleName("Model being compared")
        lay.addWidget(self.model_label)

        settings = widgets.Card()
        row = QHBoxLayout()
        self.batch = _spin(1, 256, 1, "Batch size")
        self.seq_len = _spin(8, 4096, 128, "Sequence length")
        self.runs = _spin(3, 10000, 30, "Runs")
        self.threads = _spin(0, 256, int(window.threads() or 0), "Threads", "Auto")
        from app.core.report import GLOSSARY
        self.batch.setToolTip(GLOSSARY["batch"])
        self.seq_len.setToolTip(GLOSSARY["seq_len"])
        self.runs.setToolTip("How many timed calls per model; more runs give steadier figures.")
        self.threads.setToolTip("CPU threads each model may use; Auto uses the physical cores.")
        for text, w in (("&Batch", self.batch), ("Sequence &length", self.seq_len), ("&Runs", self.runs),
                        ("T&hreads", self.threads)):
            lab = widgets.label(text)
            lab.setBuddy(w)
            row.addWidget(lab)
            row.addWidget(w)
            row.addSpacing(8)
        row.addStretch(1)
        settings.body.addWidget(widgets.label("Benchmark settings", "section"))
        settings.body.addLayout(row)
        row = QHBoxLayout()
        self.bench_button = widgets.primary_button("Run &benchmark", "Run the benchmark")
        self.bench_button.clicked.connect(self.run_benchmark)
        row.addWidget(self.bench_button)
        self.eval_button = widgets.button("&Evaluate on a file...", "Evaluate on a labelled file")
        self.eval_button.clicked.connect(self.evaluate_clicked)
        row.addWidget(self.eval_button)
        self.report_button = widgets.button("Export &report...", "Export a report")
        self.report_button.clicked.connect(self.export_clicked)
        row.addWidget(self.report_button)
        row.addStretch(1)
        settings.body.addLayout(row)
        p_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setAccessibleName("Measurement progress")
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(8)
        self.progress.hide()
        p_row.addWidget(self.progress, 1)
        self.cancel_button = widgets.button("Cancel", "Cancel the measurement")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        p_row.addWidget(self.cancel_button)
        settings.body.addLayout(p_row)
        self.status = widgets.label("", "muted", wrap=True)
        self.status.setAccessibleName("Compare status")
        settings.body.addWidget(self.status)
        lay.addWidget(settings)

        self.verdict = widgets.VerdictBadge()
        lay.addWidget(self.verdict)
        self.headline = widgets.label("", "headline", wrap=True)
        self.headline.setAccessibleName("Headline")
        lay.addWidget(self.headline)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Measure", "FP32 (original)", "INT8 (small)", "INT8 vs FP32"])
        self.table.setAccessibleName("Comparison table")
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setFocusPolicy(Qt.NoFocus)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.verticalHeader().setDefaultSectionSize(30)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Stretch)
        header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        lay.addWidget(self.table)

        from app.gui.differences import DifferencesView
        self.differences = DifferencesView()
        self.differences.open_example.connect(self._open_example)
        lay.addWidget(self.differences)

        self.charts_holder = QWidget()
        self.charts_layout = QVBoxLayout(self.charts_holder)
        self.charts_layout.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.charts_holder)
        lay.addStretch(1)
        window.entry_changed.connect(self.set_entry)
        self._update_buttons()
        self._fill()

    # --- state ------------------------------------------------------------------------------------------

    @Slot(object)
    def set_entry(self, entry) -> None:
        if entry is not None and self.entry is not None and str(entry.path) == str(self.entry.path):
            return
        self.entry = entry
        self.bench = self.evaluation = None
        if entry is not None:  # what was measured before, kept with the model (a small JSON file)
            from app.core.store import load_results
            kept = load_results(entry)
            self.bench, self.evaluation = kept["bench"], next(iter(kept["evaluations"]), None)
        self.model_label.setText(f"{entry_label(entry)}" if entry else "No model yet: convert one first.")
        self.status.setText("" if entry is None or entry.int8_dir is not None
                            else "The accuracy guard kept this model in FP32 only; there is no INT8 copy to compare.")
        self._fill()
        self._update_buttons()

    def running(self) -> bool:
        return self.task is not None and self.task.running

    def _update_buttons(self) -> None:
        ok = self.entry is not None and not self.running()
        self.bench_button.setEnabled(ok)
        self.eval_button.setEnabled(ok and self.entry.int8_dir is not None)
        self.report_button.setEnabled(self.entry is not None and bool(self.bench or self.evaluation)
                                      and not self.running())  # no report before anything is measured
        self.report_button.setToolTip("" if self.bench or self.evaluation
                                      else "Run the benchmark or evaluate on a file first: then there is something "
                                           "to report.")

    def _start(self, fn, name: str, on_result, words: str) -> None:
        self.progress.setValue(0)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.status.setText(words)
        self.window.set_job(words)
        self.task = start_task(fn, self, name=name, on_progress=self._progress, on_result=on_result,
                               on_error=self._failed, on_finished=self._finished)
        self._update_buttons()

    def _progress(self, p) -> None:
        if p.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(p.fraction * 1000))
        if p.message:
            self.status.setText(p.message)

    def _finished(self) -> None:
        self.window.set_job(None)
        self.progress.hide()
        self.cancel_button.hide()
        self._update_buttons()

    def _failed(self, e) -> None:
        if type(e).__name__ == "CancelledError":
            self.status.setText("Cancelled.")
            return
        self.status.setText(f"Failed: {e}")
        widgets.show_error(self, e)

    @Slot()
    def cancel(self) -> None:
        if self.running():
            self.task.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling…")

    # --- benchmark --------------------------------------------------------------------------------------

    @Slot()
    def run_benchmark(self) -> None:
        if self.entry is None or self.running():
            return
        entry = self.entry
        batch, seq_len, runs = self.batch.value(), self.seq_len.value(), self.runs.value()
        threads = self.threads.value() or None

        def run(progress, cancel):
            from app.core.bench import BenchConfig, benchmark
            from app.core.store import save_result
            result = benchmark(entry, BenchConfig(batch=batch, seq_len=seq_len, runs=runs, threads=threads),
                               progress=progress, cancel=cancel)
            save_result(entry, bench=result.to_dict())  # kept with the model: shown again after a restart
            return str(entry.path), result.to_dict()

        self._start(run, "bench", self._benched, f"Measuring both models ({runs} runs each)…")

    def _for_current(self, out) -> dict | None:
        key, data = out
        return data if self.entry is not None and str(self.entry.path) == key else None

    def _benched(self, out) -> None:
        data = self._for_current(out)
        if data is None:  # the user picked another model meanwhile
            return
        self.bench = data
        self.status.setText("Measured on this computer. Times vary a little from run to run.")
        self._fill()
        self.window.refresh_entries()  # the Library shows what was measured

    # --- evaluation -------------------------------------------------------------------------------------

    @Slot()
    def evaluate_clicked(self) -> None:
        path = self.ask_data_file()
        if path:
            self.evaluate_file(Path(path))

    def ask_data_file(self) -> str:
        """A labelled file (or folder, for tasks that read one) in the formats the entry's task reads."""
        from PySide6.QtWidgets import QMenu

        from app.core.tasks import get_task

        task = get_task(self.entry.task) if self.entry is not None else None
        if task is not None and task.data_folders:
            menu = QMenu(self)
            file_action = menu.addAction("A labelled file…")
            folder_action = menu.addAction(f"{task.data_folders}…")
            chosen = menu.exec(self.eval_button.mapToGlobal(self.eval_button.rect().bottomLeft()))
            if chosen is folder_action:
                return QFileDialog.getExistingDirectory(self, f"Evaluate on {task.data_folders}")
            if chosen is not file_action:
                return ""
        formats = task.data_formats if task is not None else "Labelled data (*.tsv *.csv *.jsonl *.json)"
        path, _ = QFileDialog.getOpenFileName(self, "Evaluate on a labelled file", "", f"{formats};;All files (*)")
        return path

    def evaluate_file(self, path: Path, limit: int | None = None) -> None:
        if self.entry is None or self.running():
            return
        window, entry, threads = self.window, self.entry, self.threads.value() or None

        def run(progress, cancel):
            from app.core.eval import evaluate
            from app.core.tasks import get_task

            data = get_task(entry.task).load_data(Path(path))
            key = str(entry.path)
            from app.core.store import save_result
            fp32, int8 = window.runners(entry, threads)
            result = evaluate(fp32, int8, data, limit=limit, progress=progress, cancel=cancel).to_dict()
            save_result(entry, evaluation=result)
            return key, result

        self._start(run, "eval", self._evaluated, f"Evaluating both models on {Path(path).name}…")

    def _evaluated(self, out) -> None:
        data = self._for_current(out)
        if data is None:
            return
        self.evaluation = data
        self.status.setText(f"Evaluated on {data.get('examples')} examples of {Path(str(data.get('data'))).name}.")
        self._fill()
        self.window.refresh_entries()

    # --- display ----------------------------------------------------------------------------------------

    def _fill(self) -> None:
        from app.core.report import comparison_rows, format_value, glossary, headline

        rows = comparison_rows(self.bench, self.evaluation)
        self.table.setRowCount(0)
        for r in rows:
            i = self.table.rowCount()
            self.table.insertRow(i)
            cells = (r["metric"], format_value(r["fp32"], r["unit"]), format_value(r["int8"], r["unit"]), r["ratio"])
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(glossary(r["key"], r["metric"]))
                if col == 3:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.table.setItem(i, col, item)
        if not rows:
            self.table.insertRow(0)
            self.table.setItem(0, 0, QTableWidgetItem("Run the benchmark to fill this table." if self.entry
                                                      else "Convert a model first."))
        self.table.setFixedHeight(self.table.horizontalHeader().height() + 30 * self.table.rowCount() + 4)
        self.headline.setText(headline(self.bench, self.evaluation))
        self.differences.set_evaluation(self.evaluation)
        manifest = getattr(self.entry, "manifest", None)
        if isinstance(manifest, dict) and manifest:
            from app.core.verdict import verdict
            self.verdict.set_verdict(verdict(manifest, self.evaluation))
        else:
            self.verdict.set_verdict(None)
        self._update_buttons()
        self._charts()

    def changeEvent(self, event) -> None:
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.PaletteChange, QEvent.ApplicationPaletteChange) and self.charts_widget is not None:
            self._charts()  # QtCharts take their colours when built: rebuild them in the new theme
        super().changeEvent(event)

    @Slot(dict)
    def _open_example(self, d: dict) -> None:
        self.window.show_page("Try it")
        self.window.try_it.open_example(d)

    def _charts(self) -> None:
        if self.charts_widget is not None:
            self.charts_layout.removeWidget(self.charts_widget)
            self.charts_widget.deleteLater()
            self.charts_widget = None
        if not self.bench and not self.evaluation:
            return
        from app.gui.charts import comparison_charts

        self.charts_widget = comparison_charts(self.bench, self.evaluation)
        self.charts_layout.addWidget(self.charts_widget)

    # --- report -----------------------------------------------------------------------------------------

    @Slot()
    def export_clicked(self) -> None:
        path = self.ask_report_path()
        if path:
            try:
                html_path, json_path = self.export_report(Path(path))
            except Exception as e:  # noqa: BLE001 - shown as a dialog
                widgets.show_error(self, e, context="The report could not be written.")
                return
            self.status.setText(f"Report written: {html_path} and {json_path.name}")

    def ask_report_path(self) -> str:
        name = (str(self.entry.name).replace("/", "--") if self.entry else "model") + "-report.html"
        path, _ = QFileDialog.getSaveFileName(self, "Export report", str(Path.home() / name),
                                              "HTML report (*.html)")
        return path

    def report_data(self) -> dict:
        from app.core.report import entry_report

        return entry_report(self.entry, bench=self.bench, evaluation=self.evaluation)

    def export_report(self, path: Path) -> tuple[Path, Path]:
        from app.core.report import write_reports
        return write_reports(self.report_data(), path)
