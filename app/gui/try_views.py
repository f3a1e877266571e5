"""Try-it views for named entities and semantic search: FP32 and INT8 side by side, differences marked.

Each view asks its `TryPage` to run one core call (`Task.predict` on both runners) in a worker and gets the
result back on the GUI thread; `TryPage` owns the runners, the worker and the stale-result check.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPlainTextEdit, QTableWidgetItem,
                               QTextBrowser, QVBoxLayout, QWidget)

from app.gui import widgets

SAMPLE_NER = ("Ana Torres, the chief executive of Northwind, said on Tuesday that the company would open an office "
              "in Lisbon next year. Marie Curie was born in Warsaw and worked in Paris.")
SAMPLE_DOCUMENTS = ("The Eiffel Tower is a wrought-iron lattice tower in Paris, built for the 1889 World's Fair.\n"
                    "Photosynthesis lets green plants make food from sunlight, carbon dioxide and water.\n"
                    "The Amazon is the largest river in the world by the volume of water it carries.\n"
                    "Marie Curie was the first woman to win a Nobel Prize, for her work on radioactivity.\n"
                    "The Great Wall of China was built over centuries to protect the northern borders.\n"
                    "Our refund policy: items can be returned within 30 days with the original receipt.")
SAMPLE_QUERY = "How do plants get their energy?"
# Entity-type colours, readable with dark text in both themes; types beyond these reuse them in turn.
ENTITY_COLORS = ("#a9c4ee", "#f5c39e", "#b9e3c6", "#e7b8e0", "#f3e29b", "#c9c1f0", "#f2b3b3")
DIFFERENT = "#b5472f"
# Plain words for the usual entity types (CoNLL, OntoNotes); other types are shown as the model names them.
TYPE_WORDS = {"PER": "a person", "ORG": "an organisation", "LOC": "a place", "MISC": "another name (event, "
              "nationality, work…)", "GPE": "a country, city or state", "DATE": "a date", "MONEY": "an amount of money"}


def entity_type(label: str) -> str:
    """'B-PER' / 'I-PER' / 'PER' → 'PER'."""
    return label[2:] if label[:2] in ("B-", "I-") else label


def highlight_entities(text: str, entities, colors: dict[str, str], different: set[tuple]) -> str:
    """The text as HTML with each entity marked in its type's colour and labelled; `different` spans
    (label, start, end) that the other model does not find are underlined, in red (Qt's rich text draws no border
    around inline text)."""
    out, pos = [], 0
    for e in sorted(entities, key=lambda e: e.start):
        if e.start < pos:  # overlapping (aggregation "none" on sub-words): show the first
            continue
        kind = entity_type(e.label)
        color = colors.setdefault(kind, ENTITY_COLORS[len(colors) % len(ENTITY_COLORS)])
        only_here = (e.label, e.start, e.end) in different
        mark = f"color:{DIFFERENT}; text-decoration: underline; " if only_here else "color:#111; "
        out.append(html.escape(text[pos:e.start]))
        out.append(f"<span style='background:{color}; {mark}'>{html.escape(text[e.start:e.end])}"
                   f"<span style='font-size:8pt; font-weight:600'> {html.escape(kind)}</span></span>")
        pos = e.end
    out.append(html.escape(text[pos:]))
    return f"<p style='line-height: 170%'>{''.join(out)}</p>"


def _column(name: str, color: str, body: QWidget) -> widgets.Card:
    card = widgets.Card()
    card.body.addWidget(widgets.label(f"<span style='color:{color}'>■</span> <b>{name}</b>"))
    card.body.addWidget(body, 1)
    return card


def ranking_columns(score: str, item: str) -> tuple[QHBoxLayout, dict]:
    """FP32 and INT8 rankings side by side: a layout and {"fp32": table, "int8": table} of (#, score, item)."""
    columns, tables = QHBoxLayout(), {}
    for key, name, color in (("fp32", "FP32 (original)", widgets.FP32_COLOR),
                             ("int8", "INT8 (small)", widgets.INT8_COLOR)):
        tables[key] = widgets.data_table(["#", score, item], f"{name} ranking", stretch=2)
        columns.addWidget(_column(name, color, tables[key]), 1)
    return columns, tables


def fill_rankings(tables: dict, fp32_rows: list, int8_rows: list | None) -> None:
    """Rows (identity, score, text), best first, into the two ranking tables; an INT8 row whose rank differs from
    FP32's is red and says FP32's rank. `int8_rows` None: no INT8 model (its table stays empty)."""
    fp32_rank = {key: i for i, (key, _, _) in enumerate(fp32_rows)}
    for name, rows in (("fp32", fp32_rows), ("int8", int8_rows)):
        table = tables[name]
        table.setRowCount(len(rows or ()))
        for i, (key, score, text) in enumerate(rows or ()):
            moved = name == "int8" and fp32_rank.get(key) != i
            cells = (f"{i + 1}" + (f" (FP32 #{fp32_rank[key] + 1})" if moved and key in fp32_rank else ""),
                     f"{score:.3f}", text)
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(text)
                if moved:
                    item.setForeground(QColor(DIFFERENT))
                if c < 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                table.setItem(i, c, item)


class EntitiesView(QWidget):
    """A text, its entities found by FP32 and by INT8, highlighted side by side."""

    def __init__(self, page):
        super().__init__()
        self.page = page
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(widgets.label("Text to find names of people, organisations, places and more in:", "muted"))
        self.text_edit = QPlainTextEdit(SAMPLE_NER)
        self.text_edit.setAccessibleName("Text to find entities in")
        self.text_edit.setTabChangesFocus(True)
        self.text_edit.setMaximumHeight(140)
        lay.addWidget(self.text_edit)
        row = QHBoxLayout()
        self.run_button = widgets.primary_button("&Find entities", "Find the named entities")
        self.run_button.setShortcut("Ctrl+Return")
        self.run_button.clicked.connect(self.run)
        row.addWidget(self.run_button)
        row.addWidget(widgets.label("Group word pieces:"))
        self.aggregation = QComboBox()
        self.aggregation.setAccessibleName("How word pieces are grouped into entities")
        for value, words in (("simple", "into entities (simple)"), ("first", "by word, first piece"),
                             ("average", "by word, average"), ("max", "by word, best piece"),
                             ("none", "no grouping (each piece)")):
            self.aggregation.addItem(words, value)
        row.addWidget(self.aggregation)
        self.status = widgets.label("", "muted", wrap=True)
        row.addWidget(self.status, 1)
        lay.addLayout(row)
        self.legend = widgets.label("", "muted", wrap=True)
        lay.addWidget(self.legend)
        columns = QHBoxLayout()
        self.views = {}
        for key, name, color in (("fp32", "FP32 (original)", widgets.FP32_COLOR),
                                 ("int8", "INT8 (small)", widgets.INT8_COLOR)):
            view = QTextBrowser()
            view.setAccessibleName(f"{name} entities")
            view.setOpenLinks(False)
            columns.addWidget(_column(name, color, view), 1)
            self.views[key] = view
        lay.addLayout(columns, 2)
        self.table = widgets.data_table(["Entity", "Type", "FP32 score", "INT8 score", ""], "Entities found",
                                        stretch=0)
        lay.addWidget(self.table, 1)

    def clear(self) -> None:
        self.status.setText("")
        self.legend.setText("")
        for view in self.views.values():
            view.clear()
        self.table.setRowCount(0)

    @Slot()
    def run(self) -> None:
        from app.core.tasks.base import PredictRequest

        text = self.text_edit.toPlainText()
        if not text.strip():
            self.status.setText("Type or paste a text first.")
            return
        request = PredictRequest(texts=(text,), aggregation=self.aggregation.currentData())
        self.status.setText("Reading the text…")
        self.page.run_view(request, self.show_results, self.run_button)

    def show_results(self, request, a, b) -> None:
        text = request.texts[0]
        a = a[0]
        b = b[0] if b is not None else None
        spans = {key: {(e.label, e.start, e.end) for e in r} for key, r in (("fp32", a), ("int8", b or []))}
        only = {"fp32": spans["fp32"] - spans["int8"], "int8": spans["int8"] - spans["fp32"]} if b is not None else \
            {"fp32": set(), "int8": set()}
        colors: dict[str, str] = {}
        kinds = sorted({entity_type(e.label) for e in [*a, *(b or [])]})
        legend = [f"{k}: {TYPE_WORDS.get(k, k)}" for k in kinds]
        if b is not None:
            legend.append("underlined in red: found by one model only")
        self.legend.setText(" · ".join(legend))
        self.views["fp32"].setHtml(highlight_entities(text, a, colors, only["fp32"]))
        if b is None:
            self.views["int8"].setHtml("<p>INT8 was not kept for this model (the accuracy guard kept FP32).</p>")
        else:
            self.views["int8"].setHtml(highlight_entities(text, b, colors, only["int8"]))
        by_span = {}
        for key, result in (("fp32", a), ("int8", b or [])):
            for e in result:
                by_span.setdefault((e.start, e.end, entity_type(e.label)), {})[key] = e
        self.table.setRowCount(len(by_span))
        for r, ((start, end, kind), found) in enumerate(sorted(by_span.items())):
            same = b is not None and "fp32" in found and "int8" in found
            cells = (text[start:end], kind, *(f"{found[k].score:.3f}" if k in found else "–" for k in ("fp32", "int8")),
                     "" if same or b is None else ("only FP32" if "fp32" in found else "only INT8"))
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                if not same and b is not None:
                    item.setForeground(QColor(DIFFERENT))
                self.table.setItem(r, c, item)
        if b is None:
            self.status.setText(f"FP32 found {len(a)} entities.")
        elif not only["fp32"] and not only["int8"]:
            self.status.setText(f"Both models find the same {len(a)} entities.")
        else:
            differ = len(only["fp32"] | only["int8"])
            self.status.setText(f"The models differ on {differ} entities (underlined in red).")


class SearchView(QWidget):
    """Documents, a query, and both models' rankings side by side."""

    def __init__(self, page):
        super().__init__()
        self.page = page
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(widgets.label("Documents, one per line (or open a text file):", "muted"), 1)
        self.open_button = widgets.button("&Open file…", "Open a text file of documents")
        self.open_button.clicked.connect(self.open_file)
        head.addWidget(self.open_button)
        lay.addLayout(head)
        self.docs_edit = QPlainTextEdit(SAMPLE_DOCUMENTS)
        self.docs_edit.setAccessibleName("Documents to search")
        self.docs_edit.setTabChangesFocus(True)
        self.docs_edit.setMaximumHeight(160)
        lay.addWidget(self.docs_edit)
        row = QHBoxLayout()
        row.addWidget(widgets.label("Query:"))
        self.query_edit = QLineEdit(SAMPLE_QUERY)
        self.query_edit.setAccessibleName("Search query")
        self.query_edit.setPlaceholderText("What are you looking for? Words need not match: meaning does.")
        self.query_edit.returnPressed.connect(self.run)
        row.addWidget(self.query_edit, 1)
        self.run_button = widgets.primary_button("&Search", "Search the documents")
        self.run_button.clicked.connect(self.run)
        row.addWidget(self.run_button)
        lay.addLayout(row)
        self.status = widgets.label("", "muted", wrap=True)
        lay.addWidget(self.status)
        columns, self.tables = ranking_columns("Similarity", "Document")
        lay.addLayout(columns, 1)

    def clear(self) -> None:
        self.status.setText("")
        for table in self.tables.values():
            table.setRowCount(0)

    @Slot()
    def open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open documents", "", "Text files (*.txt *.md);;All files (*)")
        if not path:
            return
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.status.setText(f"Cannot read {Path(path).name}: {e}. Save it as UTF-8 text.")
            return
        # Paragraphs separated by blank lines are documents; a file without blank lines has one per line.
        blocks = [" ".join(b.split()) for b in text.split("\n\n") if b.strip()]
        docs = blocks if len(blocks) > 1 else [line.strip() for line in text.splitlines() if line.strip()]
        self.docs_edit.setPlainText("\n".join(docs))
        self.status.setText(f"{len(docs)} documents from {Path(path).name}.")

    @Slot()
    def run(self) -> None:
        from app.core.tasks.base import PredictRequest

        docs = [line.strip() for line in self.docs_edit.toPlainText().splitlines() if line.strip()]
        query = self.query_edit.text().strip()
        if not docs or not query:
            self.status.setText("Give at least one document and a query.")
            return
        self.status.setText(f"Embedding {len(docs)} documents and the query…")
        self.page.run_view(PredictRequest(texts=tuple(docs), query=query), self.show_results, self.run_button)

    def show_results(self, request, a, b) -> None:
        def rows(result):
            return None if result is None else [(h.index, h.score, h.text) for h in result.hits]

        fill_rankings(self.tables, rows(a), rows(b))
        words = [f"FP32 {a.latency_ms:.1f} ms per text"]
        if b is not None:
            same_top = a.hits[0].index == b.hits[0].index
            same_order = [h.index for h in a.hits] == [h.index for h in b.hits]
            words.insert(0, "Same ranking in both models." if same_order else
                         "Same best match; the order below it differs (in red)." if same_top else
                         "The models pick different best matches (in red).")
            words.append(f"INT8 {b.latency_ms:.1f} ms per text")
        self.status.setText(" · ".join(words))
