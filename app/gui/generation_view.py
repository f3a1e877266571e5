"""Try-it view for text generation: one prompt, the FP32 and INT8 continuations growing token by token side by
side, with time to first token and tokens/s, and the first token where INT8 departs from FP32 marked.

The two models run one after the other in one worker (each has the CPU to itself, so their speeds compare);
tokens stream through the worker's progress signal. Cancel stops the running model and skips the other.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QPlainTextEdit,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.gui import widgets
from app.gui.try_views import DIFFERENT, _column

SAMPLE_PROMPT = "The city council approved the new bike lanes, and"
NAMES = {"fp32": "FP32 (original)", "int8": "INT8 (small)"}


def continuation_html(prompt: str, text: str, departs_at: str | None = None) -> str:
    """The prompt in grey, then the continuation; from `departs_at` (the text where the other model's
    continuation stops agreeing) on, underlined in red."""
    body = html.escape(text)
    if departs_at is not None and text.startswith(departs_at):
        same, rest = html.escape(departs_at), html.escape(text[len(departs_at):])
        body = f"{same}<span style='color:{DIFFERENT}; text-decoration: underline'>{rest}</span>"
    return f"<p style='line-height: 150%'><span style='color:gray'>{html.escape(prompt)}</span>{body}</p>"


class GenerationView(QWidget):
    """A prompt, generation settings, and the two continuations streaming side by side."""

    def __init__(self, page):
        super().__init__()
        self.page, self.task, self.prompt = page, None, ""
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(widgets.label("The beginning of a text for the model to continue:", "muted"))
        self.prompt_edit = QPlainTextEdit(SAMPLE_PROMPT)
        self.prompt_edit.setAccessibleName("Prompt")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMaximumHeight(90)
        lay.addWidget(self.prompt_edit)
        row = QHBoxLayout()
        self.run_button = widgets.primary_button("&Generate", "Continue the prompt with both models")
        self.run_button.setShortcut("Ctrl+Return")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = widgets.button("&Cancel", "Stop generating")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row.addWidget(widgets.label("New tokens:"))
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 1024)
        self.max_tokens.setValue(48)
        self.max_tokens.setAccessibleName("Tokens to generate")
        row.addWidget(self.max_tokens)
        self.sample = QCheckBox("Sample")
        self.sample.setToolTip("Off: the likeliest token each time (greedy). On: random tokens at this temperature, "
                               "the same random draws for both models.")
        row.addWidget(self.sample)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.temperature.setAccessibleName("Temperature")
        row.addWidget(self.temperature)
        row.addWidget(widgets.label("Seed:"))
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setAccessibleName("Random seed")
        row.addWidget(self.seed)
        self.status = widgets.label("", "muted", wrap=True)
        row.addWidget(self.status, 1)
        lay.addLayout(row)
        columns = QHBoxLayout()
        self.views, self.meta = {}, {}
        for key, color in (("fp32", widgets.FP32_COLOR), ("int8", widgets.INT8_COLOR)):
            box = QWidget()
            inner = QVBoxLayout(box)
            inner.setContentsMargins(0, 0, 0, 0)
            self.meta[key] = widgets.label("", "muted")
            view = QTextBrowser()
            view.setAccessibleName(f"{NAMES[key]} continuation")
            inner.addWidget(self.meta[key])
            inner.addWidget(view, 1)
            columns.addWidget(_column(NAMES[key], color, box), 1)
            self.views[key] = view
        lay.addLayout(columns, 1)

    def clear(self) -> None:
        self.status.setText("")
        for key in self.views:
            self.views[key].clear()
            self.meta[key].setText("")

    def request(self):
        from app.core.tasks.base import PredictRequest

        sample = self.sample.isChecked()
        return PredictRequest(prompt=self.prompt_edit.toPlainText(), max_new_tokens=self.max_tokens.value(),
                              temperature=self.temperature.value() if sample else None,
                              seed=self.seed.value() if sample else None)

    @Slot()
    def run(self) -> None:
        from app.core.tasks import get_task
        from app.core.tasks.generation import first_difference
        from app.gui.worker import start_task

        page = self.page
        if page.entry is None or page._busy():
            return
        request = self.request()
        if not (request.prompt or "").strip():
            self.status.setText("Type the beginning of a text first.")
            return
        task, window, entry, threads = get_task("text-generation"), page.window, page.entry, page.window.threads()
        key = str(entry.path)

        def work(progress, cancel):
            fp32, int8 = window.runners(entry, threads)
            out = {}
            for name, runner in (("fp32", fp32), ("int8", int8)):
                if runner is None or cancel.is_set():
                    out[name] = None
                    continue
                stream = lambda i, token, text, name=name: progress(_token(name, i, text))
                out[name] = task.predict(runner, request, on_token=stream, cancel=cancel)
            a, b = out["fp32"], out["int8"]
            differ = first_difference(a.generation.token_ids, b.generation.token_ids) if a and b else None
            same = None if differ is None else fp32.tokenizer.tokenizer.decode(
                list(a.generation.token_ids[:differ]), skip_special_tokens=True)  # the text both wrote
            return key, a, b, differ, same

        self.clear()
        self.prompt = request.prompt
        self.status.setText("Generating…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        page.task = self.task = start_task(work, page, name="generation", on_result=self.show_results,
                                           on_progress=self.stream, on_error=self._failed,
                                           on_finished=self._finished)

    @Slot()
    def cancel(self) -> None:
        if self.task is not None and self.task.running:
            self.task.cancel()
            self.status.setText("Stopping…")

    def stream(self, p) -> None:
        """A token arrived: p.stage is the model, p.done the token's index, p.message the text so far."""
        if p.stage in self.views:
            self.views[p.stage].setHtml(continuation_html(self.prompt, p.message))
            self.meta[p.stage].setText(f"{int(p.done) + 1} tokens…")

    def show_results(self, out) -> None:
        key, a, b, differ, same = out
        if not self.page._current(key):
            return
        results = {"fp32": a, "int8": b}
        for name, r in results.items():
            if r is None:
                self.views[name].setHtml("<p>INT8 was not kept for this model (the accuracy guard kept FP32).</p>"
                                         if name == "int8" and self.page.entry.int8_dir is None else "<p>Cancelled.</p>")
                continue
            g = r.generation
            self.views[name].setHtml(continuation_html(self.prompt, g.text, same))
            self.meta[name].setText(f"first token {g.ttft_ms:.0f} ms · {g.tokens_per_s:.1f} tokens/s · "
                                    f"{len(g.token_ids)} tokens ({g.stopped.replace('_', ' ')})")
        if a is None or b is None:
            self.status.setText("")
        elif differ is None:
            self.status.setText("Both models write the same continuation.")
        else:
            self.status.setText(f"INT8 departs from FP32 at token {differ + 1} (underlined in red from there on).")

    def _failed(self, e) -> None:
        self.status.setText("")
        if type(e).__name__ != "CancelledError":
            widgets.show_error(self, e)

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


def _token(name: str, index: int, text: str):
    from app.core.progress import Progress

    return Progress(name, index, None, text)
