"""Try it: FP32 and INT8 side by side — labels with probability bars, or the answer highlighted in the context."""

from __future__ import annotations

import html
import logging

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLineEdit, QPlainTextEdit, QScrollArea,
                               QSplitter, QStackedWidget, QTextBrowser, QVBoxLayout, QWidget)

from app.gui import widgets
from app.gui.main_window import entry_label
from app.gui.generation_view import GenerationView
from app.gui.try_views import EntitiesView, SearchView
from app.gui.zero_shot_view import ZeroShotView
from app.gui.worker import start_task

log = logging.getLogger(__name__)

MAX_CARDS = 50
NEAR_TIE = 0.10  # classification: the top two scores this close, the model is unsure (INT8 may flip it)
LOW_QA_SCORE = 0.10  # question answering: below this the context may well not answer the question


def near_tie(result) -> bool:
    scores = sorted((s.score for s in result.scores), reverse=True)
    return len(scores) > 1 and scores[0] - scores[1] < NEAR_TIE
SAMPLE_TEXT = ("What a wonderful, heartfelt film. I loved every minute.\n"
               "The plot was dull and the acting even worse.")
SAMPLE_CONTEXT = ("Pocket NLP converts Hugging Face models to ONNX without PyTorch. It then quantizes them to INT8, "
                  "which makes them about four times smaller, and shows both versions side by side so you can see "
                  "whether the small one still gives the same answers.")
SAMPLE_QUESTION = "How much smaller are INT8 models?"


def split_pair(line: str) -> tuple[str, str | None]:
    """'text<TAB>pair' or 'text ||| pair' → (text, pair)."""
    for sep in ("\t", " ||| "):
        if sep in line:
            a, b = line.split(sep, 1)
            return a.strip(), b.strip()
    return line.strip(), None


def highlight(context: str, start: int, end: int, color: str) -> str:
    if end <= start:
        return f"<p>{html.escape(context)}</p>"
    return (f"<p style='line-height: 140%'>{html.escape(context[:start])}<span style='background:{color}; color: #111; "
            f"font-weight: 600'>{html.escape(context[start:end])}</span>{html.escape(context[end:])}</p>")


class ResultCard(widgets.Card):
    """One input and the two models' labels side by side."""

    def __init__(self, text: str, fp32, int8, parent=None):
        super().__init__(parent)
        agree = int8 is None or fp32.label == int8.label
        top = QHBoxLayout()
        shown = text if len(text) < 160 else text[:157] + "…"
        t = widgets.label(f"“{shown}”", wrap=True, selectable=True)
        top.addWidget(t, 1)
        badge = widgets.label("Same answer" if agree else "Different answers")
        badge.setStyleSheet(f"color: white; background: {'#2f7d6d' if agree else '#b5472f'}; border-radius: 9px;"
                            " padding: 2px 10px; font-weight: 600;")
        badge.setAccessibleName("Agreement")
        top.addWidget(badge, 0, Qt.AlignTop)
        self.body.addLayout(top)
        grid = QGridLayout()
        grid.setHorizontalSpacing(28)
        for col, (name, result, color) in enumerate((("FP32 (original)", fp32, widgets.FP32_COLOR),
                                                     ("INT8 (small)", int8, widgets.INT8_COLOR))):
            head = widgets.label()
            if result is None:
                head.setText(f"<b>{name}</b>: not kept")
                grid.addWidget(head, 0, col)
                continue
            head.setText(f"<span style='color:{color}'>■</span> <b>{name}</b> · {html.escape(result.label)} · "
                         f"{result.latency_ms:.1f} ms")
            head.setAccessibleName(f"{name} result")
            grid.addWidget(head, 0, col)
            bars = widgets.ProbabilityBars(color)
            bars.set_scores([(s.label, s.score) for s in result.scores])
            grid.addWidget(bars, 1, col)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        self.body.addLayout(grid)
        if near_tie(fp32):
            warn = widgets.label("⚠ Near-tie: the model is unsure between its top two labels here, so a small "
                                 "change (such as INT8) can flip the answer.", "muted", wrap=True)
            warn.setAccessibleName("Low confidence")
            self.body.addWidget(warn)


class TryPage(QWidget):
    def __init__(self, window):
        super().__init__()
        self.window = window
        self.entry = None
        self.mode = None  # the task the entry runs here: its own, or a mode of it (modes_of)
        self.task = None
        self.last_results = None
        lay = widgets.page_layout(
            self, "Try it", "Type your own examples and see the original (FP32) and the small (INT8) model answer "
            "side by side, with how long each took.")
        row = QHBoxLayout()
        row.addWidget(widgets.label("Model:"))
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Converted model to try")
        self.model_combo.setMinimumWidth(420)
        self.model_combo.activated.connect(self._combo_picked)
        row.addWidget(self.model_combo)
        self.model_info = widgets.label("", "muted")
        row.addWidget(self.model_info, 1)
        lay.addLayout(row)

        self.modes = QStackedWidget()
        # 0: nothing yet
        empty = QWidget()
        e_lay = QVBoxLayout(empty)
        self.empty_label = widgets.label("No converted model yet. Convert one on the “Choose model” page, or pick "
                                         "one above.", "muted", wrap=True)
        e_lay.addWidget(self.empty_label)
        e_lay.addStretch(1)
        self.modes.addWidget(empty)
        # 1: classification
        cls = QWidget()
        c_lay = QVBoxLayout(cls)
        c_lay.setContentsMargins(0, 0, 0, 0)
        split = QSplitter(Qt.Vertical)
        top = QWidget()
        t_lay = QVBoxLayout(top)
        t_lay.setContentsMargins(0, 0, 0, 0)
        t_lay.addWidget(widgets.label("Text, one example per line. For sentence pairs put a tab (or ' ||| ') "
                                      "between the two.", "muted", wrap=True))
        self.text_edit = QPlainTextEdit(SAMPLE_TEXT)
        self.text_edit.setAccessibleName("Texts to classify")
        self.text_edit.setTabChangesFocus(True)
        t_lay.addWidget(self.text_edit, 1)
        c_row = QHBoxLayout()
        self.classify_button = widgets.primary_button("&Classify", "Classify the texts")
        self.classify_button.setShortcut("Ctrl+Return")
        self.classify_button.clicked.connect(self.classify)
        c_row.addWidget(self.classify_button)
        self.cls_status = widgets.label("", "muted", wrap=True)
        c_row.addWidget(self.cls_status, 1)
        t_lay.addLayout(c_row)
        split.addWidget(top)
        self.results_area = QScrollArea()
        self.results_area.setWidgetResizable(True)
        self.results_area.setAccessibleName("Results")
        self.results_holder = QWidget()
        self.results_layout = QVBoxLayout(self.results_holder)
        self.results_layout.setContentsMargins(0, 0, 8, 0)
        self.results_layout.addStretch(1)
        self.results_area.setWidget(self.results_holder)
        split.addWidget(self.results_area)
        split.setSizes([200, 420])
        c_lay.addWidget(split)
        self.modes.addWidget(cls)
        # 2: question answering
        qa = QWidget()
        q_lay = QVBoxLayout(qa)
        q_lay.setContentsMargins(0, 0, 0, 0)
        q_lay.addWidget(widgets.label("Context: the text the answer comes from", "muted"))
        self.context_edit = QPlainTextEdit(SAMPLE_CONTEXT)
        self.context_edit.setAccessibleName("Context")
        self.context_edit.setTabChangesFocus(True)
        self.context_edit.setMaximumHeight(150)
        q_lay.addWidget(self.context_edit)
        q_row = QHBoxLayout()
        self.question_edit = QLineEdit(SAMPLE_QUESTION)
        self.question_edit.setAccessibleName("Question")
        self.question_edit.setPlaceholderText("Ask a question about the context")
        self.question_edit.returnPressed.connect(self.answer)
        q_row.addWidget(widgets.label("Question:"))
        q_row.addWidget(self.question_edit, 1)
        self.answer_button = widgets.primary_button("&Answer", "Answer the question")
        self.answer_button.clicked.connect(self.answer)
        q_row.addWidget(self.answer_button)
        q_lay.addLayout(q_row)
        self.qa_status = widgets.label("", "muted", wrap=True)
        q_lay.addWidget(self.qa_status)
        answers = QHBoxLayout()
        self.answer_views = {}
        for key, name, color in (("fp32", "FP32 (original)", widgets.FP32_COLOR),
                                 ("int8", "INT8 (small)", widgets.INT8_COLOR)):
            card = widgets.Card()
            head = widgets.label(f"<span style='color:{color}'>■</span> <b>{name}</b>")
            card.body.addWidget(head)
            answer = widgets.label("", "big", wrap=True, selectable=True)
            answer.setAccessibleName(f"{name} answer")
            card.body.addWidget(answer)
            meta = widgets.label("", "muted")
            card.body.addWidget(meta)
            view = QTextBrowser()
            view.setAccessibleName(f"{name} answer in the context")
            view.setOpenLinks(False)
            card.body.addWidget(view, 1)
            answers.addWidget(card, 1)
            self.answer_views[key] = (answer, meta, view)
        q_lay.addLayout(answers, 1)
        self.modes.addWidget(qa)
        self.entities_view, self.search_view = EntitiesView(self), SearchView(self)
        self.modes.addWidget(self.entities_view)
        self.modes.addWidget(self.search_view)
        self.zero_shot_view = ZeroShotView(self)
        self.modes.addWidget(self.zero_shot_view)
        self.generation_view = GenerationView(self)
        self.modes.addWidget(self.generation_view)
        self.view_index = {view: self.modes.indexOf(page) for view, page in  # Task.view → its page in `modes`
                           (("classification", cls), ("qa", qa), ("entities", self.entities_view),
                            ("search", self.search_view), ("zero-shot", self.zero_shot_view),
                            ("generation", self.generation_view))}
        self._view_done_fn = None
        lay.addWidget(self.modes, 1)

        window.entry_changed.connect(self.set_entry)
        window.entries_changed.connect(self._entries_changed)

    # --- model --------------------------------------------------------------------------------------------

    def _entries_changed(self, entries) -> None:
        self.model_combo.clear()
        for e in entries:
            self.model_combo.addItem(f"{entry_label(e)}  ({widgets.task_title(e.task).lower()})", e)
        if not entries:
            self.model_combo.addItem("No converted models yet")
        self._select_in_combo()
        if self.entry is None and entries and self.window.entry is None:
            self.window.set_entry(entries[0])

    def _select_in_combo(self) -> None:
        if self.entry is None:
            return
        for i in range(self.model_combo.count()):
            e = self.model_combo.itemData(i)
            if e is not None and str(e.path) == str(self.entry.path):
                self.model_combo.setCurrentIndex(i)
                return

    def _combo_picked(self, index: int) -> None:
        e = self.model_combo.itemData(index)
        if e is not None:
            self.window.set_entry(e)

    @Slot(object)
    def set_entry(self, entry) -> None:
        self.entry = entry
        if entry is None:
            self.modes.setCurrentIndex(0)
            self.model_info.setText("")
            return
        self._select_in_combo()
        from app.core.tasks import get_task, modes_of

        spec = (getattr(entry, "manifest", None) or {}).get("spec") or {}
        self.mode = modes_of(entry.task, spec.get("labels") or ())[-1]  # an NLI classifier: zero-shot
        self.modes.setCurrentIndex(self.view_index[get_task(self.mode).view])
        self.model_info.setText("INT8 not kept (accuracy guard): FP32 only" if entry.int8_dir is None else "")
        self._clear_results()

    def open_example(self, d: dict) -> None:
        """An example from Compare's list of differences, filled in and run in this model's view."""
        from app.core.tasks import get_task

        view = get_task(self.mode).view if self.mode else ""
        text = str(d.get("input", ""))
        if view == "qa" and d.get("context"):
            self.question_edit.setText(text)
            self.context_edit.setPlainText(str(d["context"]))
            self.answer()
        elif view == "classification":
            self.text_edit.setPlainText(text.replace(" ||| ", " "))
            self.classify()
        elif view == "entities":
            self.entities_view.text_edit.setPlainText(text)
            self.entities_view.run()

    def _with_runners(self, fn):
        """Run fn(fp32, int8) in a worker, loading (and caching) the two runners first."""
        window, entry, threads = self.window, self.entry, self.window.threads()

        def run(progress, cancel):
            return fn(*window.runners(entry, threads))

        return run

    def _busy(self) -> bool:
        return self.task is not None and self.task.running

    # --- classification -----------------------------------------------------------------------------------

    @Slot()
    def classify(self) -> None:
        if self.entry is None or self._busy():
            return
        lines = [line for line in self.text_edit.toPlainText().splitlines() if line.strip()]
        if not lines:
            self.cls_status.setText("Type at least one line of text.")
            return
        pairs = [split_pair(line) for line in lines]
        texts = [a for a, _ in pairs]
        text_pairs = [b or "" for _, b in pairs] if any(b for _, b in pairs) else None

        def work(fp32, int8):
            a = fp32.classify(texts, text_pairs)
            b = int8.classify(texts, text_pairs) if int8 is not None else [None] * len(a)
            return key, lines, a, b

        key = str(self.entry.path)
        self.classify_button.setEnabled(False)
        self.cls_status.setText(f"Classifying {len(lines)} example{'s' if len(lines) > 1 else ''}…")
        self.task = start_task(self._with_runners(work), self, name="classify", on_result=self._classified,
                               on_error=self._failed, on_finished=lambda: self.classify_button.setEnabled(True))

    def _clear_results(self) -> None:
        while self.results_layout.count() > 1:
            item = self.results_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.cls_status.setText("")
        self.qa_status.setText("")
        self.entities_view.clear()
        self.search_view.clear()
        self.zero_shot_view.clear()
        self.generation_view.clear()
        for answer, meta, view in self.answer_views.values():
            answer.setText("")
            meta.setText("")
            view.clear()

    def _current(self, key: str) -> bool:
        """False when the user picked another model while this one was running."""
        return self.entry is not None and str(self.entry.path) == key

    def _classified(self, out) -> None:
        key, lines, a, b = out
        out = (lines, a, b)
        if not self._current(key):
            return
        self.last_results = out
        self._clear_results()
        for i, (text, r32, r8) in enumerate(zip(lines, a, b)):
            if i >= MAX_CARDS:
                break
            self.results_layout.insertWidget(i, ResultCard(text, r32, r8))
        same = sum(1 for r32, r8 in zip(a, b) if r8 is None or r32.label == r8.label)
        ms32 = sum(r.latency_ms for r in a) / len(a)
        words = [f"INT8 gives the same label on {same} of {len(a)}."]
        ties = sum(1 for r in a if near_tie(r))
        if ties:
            words.append(f"{ties} of them {'is a near-tie' if ties == 1 else 'are near-ties'} (the model is unsure).")
        if b and b[0] is not None:
            ms8 = sum(r.latency_ms for r in b) / len(b)
            words.append(f"Average time: FP32 {ms32:.1f} ms, INT8 {ms8:.1f} ms per example.")
        if len(a) > MAX_CARDS:
            words.append(f"Showing the first {MAX_CARDS}.")
        self.cls_status.setText(" ".join(words))

    # --- question answering -------------------------------------------------------------------------------

    @Slot()
    def answer(self) -> None:
        if self.entry is None or self._busy():
            return
        question, context = self.question_edit.text().strip(), self.context_edit.toPlainText()
        if not question or not context.strip():
            self.qa_status.setText("Give both a context and a question.")
            return

        def work(fp32, int8):
            a = fp32.answer(question, context)
            b = int8.answer(question, context) if int8 is not None else []
            return key, context, (a[0] if a else None), (b[0] if b else None)

        key = str(self.entry.path)

        self.answer_button.setEnabled(False)
        self.qa_status.setText("Reading the context…")
        self.task = start_task(self._with_runners(work), self, name="answer", on_result=self._answered,
                               on_error=self._failed, on_finished=lambda: self.answer_button.setEnabled(True))

    def _answered(self, out) -> None:
        key, context, a, b = out
        out = (context, a, b)
        if not self._current(key):
            return
        self.last_results = out
        for key, ans, color in (("fp32", a, "#a9c4ee"), ("int8", b, "#f5c39e")):
            answer, meta, view = self.answer_views[key]
            if ans is None:
                answer.setText("–" if key == "int8" and self.entry.int8_dir is None else "(no answer)")
                meta.setText("")
                view.setHtml(highlight(context, 0, 0, color))
                continue
            answer.setText(ans.text or "(no answer in the context)")
            low = ans.text and ans.score < LOW_QA_SCORE
            meta.setText(f"score {ans.score:.3f} · {ans.latency_ms:.1f} ms" + (
                " · ⚠ low confidence: the context may not answer this question" if low else ""))
            answer.setProperty("role", "muted" if low else "big")
            answer.style().unpolish(answer)
            answer.style().polish(answer)
            view.setHtml(highlight(context, ans.start, ans.end, color))
        if a is not None and b is not None:
            self.qa_status.setText("Both models give the same answer." if a.text == b.text
                                   else "The two models give different answers.")
        else:
            self.qa_status.setText("")

    # --- views of the other tasks (try_views.py) -----------------------------------------------------------

    def run_view(self, request, on_result, button) -> None:
        """Run the entry's task on both models in a worker; `on_result(request, fp32, int8 or None)` gets them."""
        if self.entry is None or self._busy():
            return
        from app.core.tasks import get_task

        task, key = get_task(self.mode), str(self.entry.path)

        def work(fp32, int8):
            return key, request, task.predict(fp32, request), task.predict(int8, request) if int8 is not None else None

        self._view_done_fn = on_result
        button.setEnabled(False)
        self.task = start_task(self._with_runners(work), self, name=task.view, on_result=self._view_done,
                               on_error=self._failed, on_finished=lambda: button.setEnabled(True))

    def _view_done(self, out) -> None:
        key, request, a, b = out
        if self._current(key):
            self.last_results = (request, a, b)
            self._view_done_fn(request, a, b)

    def _failed(self, e) -> None:
        self.cls_status.setText("")
        self.qa_status.setText("")
        self.entities_view.status.setText("")
        self.search_view.status.setText("")
        self.zero_shot_view.status.setText("")
        widgets.show_error(self, e)
