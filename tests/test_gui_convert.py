"""The whole path through the desktop app with tiny fixture models: convert, cancel, try it, compare, report."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

store = pytest.importorskip("app.core.store")


@pytest.fixture
def window(qtbot, tmp_path):
    from app.gui.main_window import MainWindow
    from app.gui.widgets import apply_theme

    apply_theme(QApplication.instance(), "light")
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from app.gui.worker import stop_all
    stop_all()


def error_dialogs(w):
    from app.gui.widgets import ErrorDialog
    return [d for d in w.findChildren(ErrorDialog) if d.isVisible()]


def convert_through_gui(window, qtbot, folder):
    window.choose.model_edit.setText(str(folder))
    qtbot.mouseClick(window.choose.convert_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.convert.summary.isVisible() or bool(error_dialogs(window)), timeout=120000)
    assert not error_dialogs(window), error_dialogs(window)[0].message.text()
    return window.convert.entry


def test_convert_classification_then_try_it(window, qtbot, tiny_models):
    folder = tiny_models("bert", "sequence-classification")
    entry = convert_through_gui(window, qtbot, folder)
    page = window.convert
    assert entry is not None and entry.fp32_dir.is_dir()
    assert store.list_entries()[0].path == entry.path
    assert [page.steps[k].state for k in ("download", "export", "quantize", "validate")] == \
        ["skipped", "done", "done", "done"]
    assert page.overall.value() == 1000
    assert page.summary.headline.text().startswith(f"{entry.name} (text classification) is ready")
    figures = [value.text() for value, _ in page.summary.figures]
    assert "smaller" in figures[0] if entry.int8_dir else figures[1] == "Not kept"
    assert page.model_label.text() == f"Converted {entry.name}" and not page.cancel_button.isVisible()
    assert page.log.toPlainText().count("\n") >= 2
    assert window.entry == entry and str(folder) in window.recent()
    # the library and the Try it picker hear about it
    qtbot.waitUntil(lambda: window.library.table.rowCount() == 1, timeout=10000)

    qtbot.mouseClick(page.try_button, Qt.LeftButton)
    assert window.current_page_name() == "Try it"
    try_it = window.try_it
    assert try_it.modes.currentIndex() == 1
    try_it.text_edit.setPlainText("hello world\nthe movie was bad\nfirst part\tsecond part")
    qtbot.mouseClick(try_it.classify_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: try_it.last_results is not None, timeout=120000)
    lines, fp32, int8 = try_it.last_results
    assert len(lines) == len(fp32) == 3
    assert try_it.results_layout.count() == 4  # three cards and the stretch
    assert "same label on" in try_it.cls_status.text()
    assert all(r.label in entry.manifest["spec"]["labels"] for r in fp32)


def test_converting_again_reuses_the_stored_copy(window, qtbot, tiny_models):
    folder = tiny_models("bert", "sequence-classification")
    first = convert_through_gui(window, qtbot, folder)
    window.convert.summary.hide()
    again = convert_through_gui(window, qtbot, folder)
    assert again.path == first.path and len(store.list_entries()) == 1
    assert window.convert.steps["quantize"].status.text().startswith("Done earlier")


def test_cancel_part_way_leaves_the_store_unchanged(window, qtbot, tiny_models, monkeypatch):
    import app.core.quantize as quantize

    folder = tiny_models("bert", "sequence-classification")
    root = store.store_root()
    before = sorted(p.name for p in root.iterdir() if p.name != ".hashes.json") if root.exists() else []
    reached = threading.Event()
    original = quantize.quantize_model

    def slow_quantize(*args, cancel=None, **kwargs):  # park the worker in the middle of the conversion
        reached.set()
        cancel.wait(20)
        return original(*args, cancel=cancel, **kwargs)

    monkeypatch.setattr(quantize, "quantize_model", slow_quantize)
    window.choose.model_edit.setText(str(folder))
    qtbot.mouseClick(window.choose.convert_button, Qt.LeftButton)
    qtbot.waitUntil(reached.is_set, timeout=180000)
    assert window.convert.running() and not window.choose.convert_button.isEnabled()
    assert "conversion is running" in window.choose.convert_button.toolTip()  # says why it is disabled
    qtbot.waitUntil(lambda: "Converting" in window.statusBar().currentMessage(), timeout=5000)
    assert window.job_label.isVisibleTo(window) and "Converting" in window.job_label.text()  # seen from every page
    start = time.monotonic()
    qtbot.mouseClick(window.convert.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not window.convert.running(), timeout=5000)
    assert time.monotonic() - start < 2.0
    assert "Cancelled" in window.convert.status.text() and window.convert.model_label.text().startswith("Cancelled")
    assert window.statusBar().currentMessage() == "Ready" and not window.job_label.isVisibleTo(window)
    assert not error_dialogs(window)
    after = sorted(p.name for p in root.iterdir() if p.name != ".hashes.json") if root.exists() else []
    assert [n for n in after if not n.endswith(".lock")] == [n for n in before if not n.endswith(".lock")]
    assert store.list_entries() == []
    assert window.choose.convert_button.isEnabled()


def test_question_answering_highlights_the_answer(window, qtbot, tiny_models):
    entry = convert_through_gui(window, qtbot, tiny_models("bert", "question-answering"))
    window.show_page("Try it")
    try_it = window.try_it
    assert try_it.modes.currentIndex() == 2
    try_it.context_edit.setPlainText("the cat sat on the mat in the house of the dog")
    try_it.question_edit.setText("where did the cat sit")
    qtbot.keyClick(try_it.question_edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: try_it.last_results is not None, timeout=120000)
    context, a, b = try_it.last_results
    assert a is not None and context[a.start:a.end] == a.text
    answer, meta, view = try_it.answer_views["fp32"]
    assert "ms" in meta.text()
    if a.text:
        assert "background" in view.toHtml() and a.text.split()[0] in view.toPlainText()
    assert entry.task == "question-answering"


def test_compare_fills_table_charts_and_writes_a_readable_report(window, qtbot, tiny_models, tmp_path):
    entry = convert_through_gui(window, qtbot, tiny_models("bert", "sequence-classification"))
    window.show_page("Compare")
    compare = window.compare
    assert compare.entry == entry and compare.bench_button.isEnabled()
    compare.runs.setValue(5)
    compare.seq_len.setValue(16)
    qtbot.mouseClick(compare.bench_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: compare.bench is not None or bool(error_dialogs(window)), timeout=180000)
    assert not error_dialogs(window)
    assert compare.bench["config"]["runs"] == 5 and compare.bench["config"]["seq_len"] == 16
    assert "smaller" in compare.headline.text()
    metrics = [compare.table.item(r, 0).text() for r in range(compare.table.rowCount())]
    assert metrics[:5] == ["File size", "Load time", "Memory", "Latency p50", "Latency p95"]
    assert compare.charts_widget is not None

    labels = entry.manifest["spec"]["labels"]
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"example number {i} here\t{labels[i % len(labels)]}\n"
                                                  for i in range(12)), encoding="utf-8")
    compare.evaluate_file(data)
    qtbot.waitUntil(lambda: compare.evaluation is not None or bool(error_dialogs(window)), timeout=180000)
    assert not error_dialogs(window)
    metrics = [compare.table.item(r, 0).text() for r in range(compare.table.rowCount())]
    assert "Same answer as FP32" in metrics and "Accuracy" in metrics

    html_path, json_path = compare.export_report(tmp_path / "out" / "report.html")
    page = html_path.read_text(encoding="utf-8")
    assert "<svg" in page and "FP32" in page and str(entry.name) in page and "<script" not in page
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["model"]["name"] == entry.name
    assert report["evaluation"]["examples"] == 12 and report["bench"]["fp32"]["p50_ms"] > 0


def test_library_reopens_and_deletes(window, qtbot, tiny_models, monkeypatch):
    from app.gui import widgets

    entry = convert_through_gui(window, qtbot, tiny_models("bert", "sequence-classification"))
    library = window.library
    qtbot.waitUntil(lambda: library.table.rowCount() == 1, timeout=10000)
    window.show_page("Library")
    library.select(0)
    qtbot.mouseClick(library.compare_button, Qt.LeftButton)
    assert window.current_page_name() == "Compare"
    window.show_page("Library")
    library.select(0)
    monkeypatch.setattr(widgets, "confirm", lambda *a: True)
    qtbot.mouseClick(library.delete_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: library.table.rowCount() == 0, timeout=10000)
    assert not entry.path.exists() and window.entry is None
    assert library.empty.isVisible()


def test_a_damaged_entry_is_listed_as_damaged_and_measurements_survive_a_restart(qtbot, tmp_path, tiny_models):
    from app.gui.main_window import MainWindow

    good = store.convert(str(tiny_models("distilbert", "sequence-classification")))
    broken = store.convert(str(tiny_models("roberta", "sequence-classification")))
    (broken.path / "manifest.json").write_text('{"source": 5}')  # valid JSON of the wrong shape
    store.save_result(good, bench={"model": good.name, "fp32": None, "int8": None, "ratios": {"p50": 2.5}})
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: len(w.library.entries) == 2, timeout=30000)
    assert not error_dialogs(w)
    rows = {w.library.table.item(r, 0).data(Qt.UserRole).path: r for r in range(w.library.table.rowCount())}
    assert w.library.table.item(rows[broken.path], 1).text().startswith("Damaged")
    w.library.select(rows[broken.path])
    assert not w.library.open_button.isEnabled() and w.library.delete_button.isEnabled()
    w.library.select(rows[good.path])
    assert w.library.open_button.isEnabled()
    assert w.library.table.item(rows[good.path], 6).text() != "not measured yet"  # the kept benchmark
    w.library.compare_selected()
    assert w.compare.bench is not None and w.compare.bench["model"] == good.name  # kept with the model
    from app.gui.worker import stop_all
    stop_all()


def test_use_it_copies_code_exports_the_folder_and_inspects_it(window, qtbot, tiny_models, tmp_path):
    from app.gui.use_it import UseItDialog

    entry = store.convert(str(tiny_models("bert", "sequence-classification")))
    dialog = UseItDialog(entry, window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.table.rowCount() > 0, timeout=30000)
    assert {dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())} == {"INT8", "FP32"}
    dialog.copy_code()
    assert "onnxruntime" in QApplication.clipboard().text()
    dialog.export_to(tmp_path)
    qtbot.waitUntil(lambda: dialog.status.text().startswith("Exported"), timeout=30000)
    exported = tmp_path / f"{entry.path.name}-int8"
    assert (exported / "model.onnx").is_file() and str(exported) in dialog.code.toPlainText()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_a_failed_convert_says_so_in_the_header_and_offers_try_again(window, qtbot, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    window.choose.model_edit.setText(str(empty))
    qtbot.mouseClick(window.choose.convert_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(error_dialogs(window)), timeout=30000)
    dialog = error_dialogs(window)[0]
    assert dialog.windowTitle() == "Not a model folder" and dialog.retry is not None
    assert window.convert.model_label.text() == f"Could not convert {empty}"
    assert window.statusBar().currentMessage() == "Ready"
    dialog.accept()
