"""Convert: download, export, optimize, quantize, validate — each with its own progress — then a summary card.

Cancel sets the worker's event; the core stops between steps (or between download chunks) and leaves the
store as it was.
"""

from __future__ import annotations

import collections
import logging
import math
import time

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QWidget)

from app.gui import widgets
from app.gui.worker import start_task

log = logging.getLogger(__name__)

STEPS = (("download", "Download", "Fetch the model files from the Hugging Face Hub"),
         ("export", "Export", "Build the ONNX graph from the weights"),
         ("optimize", "Optimize", "Fuse operations for faster CPU inference"),
         ("quantize", "Quantize", "Make the INT8 copy, checking its accuracy"),
         ("validate", "Validate", "Check both models answer like the original"))
WEIGHTS = {"download": 0.3, "export": 0.2, "optimize": 0.1, "quantize": 0.3, "validate": 0.1}


def plain_settings(quantization: dict) -> str:
    """What the accuracy guard chose, in words a non-specialist follows (the technical sentence is in Details)."""
    config = (quantization.get("chosen") or {}).get("config") or {}
    if not config:
        return "INT8 changed the answers too much, so only the original (FP32) model is kept."
    kept = len(config.get("keep_fp32") or ())
    parts = ["The small model stores its weights as 8-bit integers instead of 32-bit numbers"]
    if kept:
        parts.append(f"{kept} part{'s' if kept > 1 else ''} that INT8 would change most stay{'' if kept > 1 else 's'} "
                     "in full precision")
    if config.get("scale_outliers") or config.get("split_outliers"):
        parts.append("unusually large values are handled separately so they keep their precision")
    return "; ".join(parts) + "."


def size_words(fp32: int | None, int8: int | None) -> str:
    if not fp32 or not int8:
        return "–"
    return f"{fp32 / int8:.1f}x smaller"


class StepRow:
    def __init__(self, grid: QGridLayout, row: int, key: str, title: str, hint: str):
        self.key = key
        self.icon = QLabel("○")
        self.icon.setFixedWidth(22)
        self.icon.setAlignment(Qt.AlignCenter)
        self.title = widgets.label(title)
        self.title.setStyleSheet("font-weight: 600;")
        self.title.setToolTip(hint)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(10)
        self.bar.setAccessibleName(f"{title} progress")
        self.status = widgets.ElidedLabel(hint)
        self.status.setProperty("role", "muted")
        self.status.setMinimumWidth(200)
        grid.addWidget(self.icon, row, 0)
        grid.addWidget(self.title, row, 1)
        grid.addWidget(self.bar, row, 2)
        grid.addWidget(self.status, row, 3)
        self.hint = hint
        self.state = "waiting"

    def reset(self) -> None:
        self.set_state("waiting")
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.status.setText(self.hint)

    def set_state(self, state: str) -> None:
        self.state = state
        self.icon.setText({"waiting": "○", "running": "◐", "done": "✓", "failed": "✗", "skipped": "–"}[state])
        if state == "done":
            self.bar.setRange(0, 1000)
            self.bar.setValue(1000)


class ConvertPage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.task = None
        self.model_text = ""
        self.entry = None
        self.samples: collections.deque = collections.deque(maxlen=40)
        self.stage = None
        self.stage_started: float | None = None
        self.started_at = 0.0
        lay = widgets.page_layout(
            self, "Convert", "Pocket NLP downloads the model, turns it into an ONNX model that runs without PyTorch, "
            "and makes a smaller INT8 copy, checking that it still answers like the original.")

        card = widgets.Card()
        head = QHBoxLayout()
        self.model_label = widgets.label("Choose a model first, then press Convert.", "section", wrap=True)
        self.model_label.setAccessibleName("Model being converted")
        head.addWidget(self.model_label, 1)
        self.cancel_button = widgets.button("Cancel", "Cancel the conversion")
        self.cancel_button.setEnabled(False)
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        head.addWidget(self.cancel_button)
        card.body.addLayout(head)
        grid = QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(10)
        grid.setColumnStretch(2, 2)
        grid.setColumnStretch(3, 3)
        grid.setColumnMinimumWidth(2, 200)
        self.steps = {key: StepRow(grid, i, key, title, hint) for i, (key, title, hint) in enumerate(STEPS)}
        card.body.addLayout(grid)
        card.body.addWidget(widgets.hline())
        overall_row = QHBoxLayout()
        overall_row.addWidget(widgets.label("Overall"))
        self.overall = QProgressBar()
        self.overall.setRange(0, 1000)
        self.overall.setAccessibleName("Overall progress")
        self.overall.setFormat("%p%")
        overall_row.addWidget(self.overall, 1)
        self.elapsed = widgets.label("", "muted")
        self.elapsed.setMinimumWidth(90)
        overall_row.addWidget(self.elapsed)
        card.body.addLayout(overall_row)
        self.status = widgets.label("", wrap=True)
        self.status.setAccessibleName("Conversion status")
        card.body.addWidget(self.status)
        lay.addWidget(card)

        self.summary = widgets.SummaryCard()
        actions = QHBoxLayout()
        self.try_button = widgets.primary_button("&Try it", "Try the converted model")
        self.try_button.clicked.connect(lambda: self.window.show_page("Try it"))
        self.compare_button = widgets.button("Co&mpare FP32 and INT8", "Compare FP32 and INT8")
        self.compare_button.clicked.connect(lambda: self.window.show_page("Compare"))
        actions.addWidget(self.try_button)
        actions.addWidget(self.compare_button)
        actions.addStretch(1)
        self.summary.body.addLayout(actions)
        self.summary.hide()
        lay.addWidget(self.summary)

        log_row = QHBoxLayout()
        self.log_button = widgets.button("Show &log", "Show the conversion log")
        self.log_button.setCheckable(True)
        self.log_button.toggled.connect(self._toggle_log)
        log_row.addWidget(self.log_button)
        log_row.addStretch(1)
        lay.addLayout(log_row)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setAccessibleName("Conversion log")
        self.log.setMaximumBlockCount(2000)
        self.log.hide()
        lay.addWidget(self.log, 1)
        lay.addStretch(0)
        self._last_message = ""

    # --- state ------------------------------------------------------------------------------------------

    def running(self) -> bool:
        return self.task is not None and self.task.running

    def _toggle_log(self, on: bool) -> None:
        self.log.setVisible(on)
        self.log_button.setText("Hide &log" if on else "Show &log")

    def _log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    # --- actions ----------------------------------------------------------------------------------------

    def start(self, text: str) -> None:
        """Convert `text` (a Hub id, URL or folder) into the store."""
        if self.running():
            return
        from app.core.errors import PocketError
        from app.core.hub import ModelRef

        self.window.show_page("Convert")
        try:
            ref = ModelRef.parse(text)
        except PocketError as e:
            self.status.setText(str(e))
            widgets.show_error(self, e)
            return
        self.model_text = text
        self.entry = None
        self.summary.hide()
        for step in self.steps.values():
            step.reset()
        if ref.is_local:
            self.steps["download"].set_state("skipped")
            self.steps["download"].status.setText("A folder on this computer: nothing to download")
        self.overall.setValue(0)
        self.stage = None
        self.stage_started = None
        self.samples.clear()
        self.started_at = time.monotonic()
        self.model_label.setText(f"Converting {ref.label}")
        self.window.set_job(f"Converting {ref.label}…")
        self.status.setText("Starting…")
        self._log(f"Converting {ref.label}")
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        threads = self.window.threads()

        def run(progress, cancel):
            from app.core import store
            return store.convert(ref, store.ConvertConfig(threads=threads), progress=progress, cancel=cancel)

        self.task = start_task(run, self, name="convert", on_progress=self._progress, on_result=self._done,
                               on_error=self._failed, on_finished=self._finished)
        self.window.choose._update_buttons()

    @Slot()
    def cancel(self) -> None:
        if self.running():
            self.task.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling… the store is left as it was.")
            self._log("Cancel requested")

    # --- progress ---------------------------------------------------------------------------------------

    def _progress(self, p) -> None:
        step = self.steps.get(p.stage)
        now = time.monotonic()
        self.elapsed.setText(widgets.human_seconds(now - self.started_at))
        if step is None:  # a stage we do not draw: show its words only
            if p.message:
                self.status.setText(p.message)
            return
        reused = p.stage == "validate" and "already converted" in (p.message or "").lower()
        if reused:
            for key, *_ in STEPS:
                if self.steps[key].state == "waiting":
                    self.steps[key].set_state("skipped")
                    self.steps[key].status.setText("Done earlier: reusing the stored copy")
        if p.stage != self.stage:
            keys = [k for k, *_ in STEPS]
            for key in keys[: keys.index(p.stage)]:
                if self.steps[key].state in ("waiting", "running"):
                    self.steps[key].set_state("done" if self.steps[key].state == "running" else "skipped")
                    self.steps[key].status.setText("Done" if self.steps[key].state == "done" else "Not needed")
            self.stage = p.stage
            self.stage_started = now
            self.samples.clear()
            step.set_state("running")
        if p.fraction is None:
            step.bar.setRange(0, 0)  # busy
        else:
            step.bar.setRange(0, 1000)
            step.bar.setValue(int(p.fraction * 1000))
        step.status.setText(self._describe(p, now))
        if p.message and p.message != self._last_message:
            self._last_message = p.message
            self._log(f"[{p.stage}] {p.message}")
        self.status.setText(p.message or step.title.text())
        overall = self._overall(p, now)
        self.overall.setValue(int(overall * 1000))
        self.window.set_job(f"Converting {self.model_text}: {overall:.0%}")

    def _describe(self, p, now: float) -> str:
        if p.unit != "B":
            if p.total:
                return f"{p.message}  ({p.done:g} of {p.total:g})" if p.message else f"{p.done:g} of {p.total:g}"
            return p.message or "Working…"
        self.samples.append((now, p.done))
        t0, b0 = self.samples[0]
        speed = (p.done - b0) / (now - t0) if now - t0 > 0.3 else None
        parts = [f"{widgets.human_bytes(p.done)} of {widgets.human_bytes(p.total)}" if p.total
                 else widgets.human_bytes(p.done)]
        if speed:
            parts.append(f"{widgets.human_bytes(speed)}/s")
            if p.total:
                parts.append(f"{widgets.human_seconds((p.total - p.done) / speed)} left")
        return " · ".join(parts)

    def _overall(self, p, now: float | None = None) -> float:
        """The finished steps' weights plus the running step's share: its fraction when it reports one, else a
        creep toward 90% of it over the seconds it has run (the guard's search has no known length), so the
        figure moves with the work instead of sitting still."""
        total = 0.0
        for key, *_ in STEPS:
            if key == p.stage:
                if p.fraction is not None:
                    share = p.fraction
                else:
                    running = (now or time.monotonic()) - (self.stage_started or now or 0.0)
                    share = 0.9 * (1 - math.exp(-running / 20.0))
                total += WEIGHTS[key] * share
                break
            total += WEIGHTS[key]
        return min(1.0, total)

    # --- outcome ----------------------------------------------------------------------------------------

    def _done(self, entry) -> None:
        self.entry = entry
        for step in self.steps.values():
            if step.state in ("running", "waiting", "done"):
                step.set_state("done")
                step.status.setText("Done")
        self.overall.setValue(1000)
        self.model_label.setText(f"Converted {entry.name}")
        elapsed = widgets.human_seconds(time.monotonic() - self.started_at)
        self.status.setText(f"Finished in {elapsed}.")
        self._log(f"Finished in {elapsed}: {entry.path}")
        self.window.add_recent(self.model_text)
        self.window.choose.refresh_recent()
        self.show_summary(entry)
        self.window.set_entry(entry)
        self.window.refresh_entries()

    def show_summary(self, entry) -> None:
        fp32, int8 = entry.model_bytes("fp32"), entry.model_bytes("int8") if entry.int8_dir else None
        quant = (entry.manifest or {}).get("quantization") or {}
        quant = quant if isinstance(quant, dict) else {}
        explanation = str(quant.get("explanation") or "")
        agreement = ((quant.get("chosen") or {}).get("agreement") or {}).get("agreement")
        task = widgets.task_title(entry.task)
        if entry.int8_dir is None:
            headline = f"{entry.name} ({task.lower()}) is ready, in FP32 only"
            figures = [(widgets.human_bytes(fp32), "FP32 model"), ("Not kept", "INT8 changed the answers too much")]
        else:
            headline = f"{entry.name} ({task.lower()}) is ready"
            figures = [(size_words(fp32, int8), f"{widgets.human_bytes(fp32)} → {widgets.human_bytes(int8)}")]
            if isinstance(agreement, (int, float)):
                figures.append((f"{agreement:.2%}", "same answer as FP32 on the built-in test examples "
                                                    "(calibration, not your data)"))
        self.summary.show_summary(headline, figures, plain_settings(quant) + " Compare measures the speed on this "
                                  "computer, and the accuracy on a labelled file of yours.", technical=explanation)
        from app.core.verdict import entry_verdict
        self.summary.verdict.set_verdict(entry_verdict(entry))
        self.summary.show()

    def _failed(self, e) -> None:
        step = self.steps.get(self.stage) if self.stage else None
        if type(e).__name__ == "CancelledError":
            if step is not None:
                step.set_state("failed")
                step.status.setText("Cancelled")
            self.model_label.setText(f"Cancelled converting {self.model_text}")
            self.status.setText("Cancelled. Nothing was added to your models.")
            self._log("Cancelled; the store is unchanged")
            return
        if step is not None:
            step.set_state("failed")
            step.bar.setRange(0, 1000)
        self.model_label.setText(f"Could not convert {self.model_text}")
        self.status.setText(f"Conversion failed: {e}")
        self._log(f"Failed: {type(e).__name__}: {e}")
        text = self.model_text
        widgets.show_error(self, e, context=f"Converting {text} failed.", retry=lambda: self.start(text))

    def _finished(self) -> None:
        self.window.set_job(None)
        self.cancel_button.setEnabled(False)
        self.cancel_button.hide()
        self.window.choose._update_buttons()

