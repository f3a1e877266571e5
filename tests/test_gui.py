"""The desktop app, offscreen: the worker pattern, navigation, Choose model, errors, settings (no network)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt, QThread  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QApplication, QComboBox, QLineEdit, QPlainTextEdit  # noqa: E402

from app.core.progress import Progress, report  # noqa: E402
from app.core.tasks import TASKS  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    s = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    yield s
    s.sync()


@pytest.fixture
def window(qtbot, settings):
    from app.gui.main_window import MainWindow
    from app.gui.widgets import apply_theme

    apply_theme(QApplication.instance(), "light")
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    from app.gui.worker import stop_all
    stop_all()


def error_dialogs(widget):
    from app.gui.widgets import ErrorDialog
    return [d for d in widget.window().findChildren(ErrorDialog) if d.isVisible()]


# --- the worker pattern ---------------------------------------------------------------------------------------

def test_worker_runs_off_the_gui_thread_and_calls_back_on_it(qtbot):
    from app.gui.worker import start_task

    gui = QThread.currentThread()
    seen = {"progress": [], "threads": set()}

    def fn(progress, cancel):
        seen["worker"] = threading.current_thread()
        for i in range(5):
            report(progress, "export", i + 1, 5, f"step {i + 1}")
        return 42

    def on_progress(p):
        seen["progress"].append(p)
        seen["threads"].add(QThread.currentThread() is gui)

    results = []
    task = start_task(fn, None, on_result=results.append, on_progress=on_progress)
    qtbot.waitUntil(lambda: not task.running, timeout=5000)
    assert results == [42]
    assert seen["worker"] is not threading.main_thread()
    assert seen["threads"] == {True}  # callbacks ran on the GUI thread
    assert seen["progress"][-1].done == 5  # the last step of a stage is never throttled away


def test_worker_error_and_cancel(qtbot):
    from app.core.errors import CancelledError, ModelNotFoundError
    from app.core.progress import check_cancel
    from app.gui.worker import start_task

    errors = []
    task = start_task(lambda progress, cancel: (_ for _ in ()).throw(ModelNotFoundError("nope")), None,
                      on_error=errors.append)
    qtbot.waitUntil(lambda: not task.running, timeout=5000)
    assert isinstance(errors[0], ModelNotFoundError)

    started = threading.Event()

    def slow(progress, cancel):
        started.set()
        for _ in range(500):
            check_cancel(cancel)
            cancel.wait(0.01)
        return "not cancelled"

    errors.clear()
    task = start_task(slow, None, on_error=errors.append)
    qtbot.waitUntil(started.is_set, timeout=5000)
    task.cancel()
    qtbot.waitUntil(lambda: not task.running, timeout=2000)
    assert isinstance(errors[0], CancelledError)


def test_progress_bridge_throttles_but_keeps_stage_changes(qtbot):
    from app.gui.worker import ProgressBridge

    bridge = ProgressBridge(interval=10.0)
    got = []
    bridge.progressed.connect(got.append)
    for i in range(100):
        bridge(Progress("download", i, 1000, unit="B"))
    bridge(Progress("export", 0, 3))
    bridge(Progress("export", 3, 3))
    assert [p.stage for p in got] == ["download", "export", "export"]


# --- the window -------------------------------------------------------------------------------------------------

def test_pages_and_keyboard_navigation(window, qtbot):
    from app.gui.main_window import PAGES

    assert window.current_page_name() == "Choose model"
    for i, name in enumerate(PAGES, start=1):
        qtbot.keyClick(window, Qt.Key(Qt.Key_0 + i), Qt.ControlModifier)
        assert window.current_page_name() == name
    window.show_page("Compare")
    assert window.stack.currentWidget() is window.compare


def test_every_control_has_an_accessible_name(window):
    missing = []
    for page in (window.choose, window.convert, window.try_it, window.compare, window.library):
        for w in [w for kind in (QAbstractButton, QLineEdit, QPlainTextEdit, QComboBox)
                  for w in page.findChildren(kind)]:
            if type(w).__name__ == "QToolButton":  # Qt's own: line-edit clear buttons, tab scrollers
                continue
            if not w.accessibleName() and not (isinstance(w, QAbstractButton) and w.text()):
                missing.append(f"{type(page).__name__}: {type(w).__name__} {w.objectName()}")
    # Qt's own internals (spin box line edits, scroll bar buttons) have no name; ours all do
    missing = [m for m in missing if "qt_" not in m]
    assert not missing, missing


def test_curated_models_are_listed_and_fill_the_model_box(window):
    from app.gui.choose_page import load_curated

    curated = load_curated()
    assert len(curated) >= 5 and {m["task"] for m in curated} == set(TASKS)
    table = window.choose.curated_table
    assert table.rowCount() == len(curated)
    table.selectRow(0)
    assert window.choose.model_edit.text() == curated[0]["id"]


def test_bad_model_id_shows_a_dialog_and_the_app_stays_usable(window, qtbot):
    choose = window.choose
    choose.model_edit.setText("nobody/no-such-model-xyz")  # offline in tests: not cached → OfflineError
    qtbot.mouseClick(choose.convert_button, Qt.LeftButton)
    assert window.current_page_name() == "Convert"
    qtbot.waitUntil(lambda: bool(error_dialogs(window)), timeout=20000)
    dialog = error_dialogs(window)[0]
    assert "nobody/no-such-model-xyz" in dialog.message.text()
    assert not dialog.details.isVisible()
    dialog.toggle.click()
    assert dialog.details.isVisible() and "Traceback" in dialog.details.toPlainText()
    dialog.accept()
    assert not window.convert.running()
    assert "failed" in window.convert.status.text().lower()
    # still usable: a malformed id is refused at once, with another dialog
    window.show_page("Choose model")
    choose.model_edit.setText("not a model id !!")
    qtbot.keyClick(choose.model_edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: bool(error_dialogs(window)), timeout=5000)
    error_dialogs(window)[0].accept()
    assert choose.convert_button.isEnabled()


def test_hub_search_results_show_what_can_be_converted(window, qtbot, monkeypatch):
    from app.core import hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    window.choose.update_offline()
    calls = []

    def fake_search(query, task="text-classification", limit=30, **kw):
        calls.append((query, task))
        return [hub.HubModel("org/good", task, 12345, convertible=True, architecture="BertForSequenceClassification"),
                hub.HubModel("org/pickle", task, 99, convertible=False, reason="no safetensors weights")]

    monkeypatch.setattr(hub, "search_models", fake_search)
    choose = window.choose
    choose.tabs.setCurrentIndex(1)
    choose.task_combo.setCurrentIndex(1)
    choose.search_edit.setText("squad")
    qtbot.keyClick(choose.search_edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: choose.search_table.rowCount() == 2, timeout=5000)
    assert calls == [("squad", "question-answering")]
    assert choose.search_table.item(0, 2).text() == "12,345"
    assert choose.search_table.item(1, 3).text() == "No: no safetensors weights"
    assert "1 can be converted" in choose.search_status.text()
    choose.search_table.selectRow(0)
    assert choose.model_edit.text() == "org/good"


def test_offline_mode_says_so_once_and_offers_local_models(window):
    choose = window.choose  # tests run with HF_HUB_OFFLINE=1
    assert choose.banner.isVisible() and "offline" in choose.banner.text.text().lower()
    assert not choose.search_button.isEnabled()
    assert choose.tabs.currentIndex() == 2


def test_search_models_translates_hub_listing(monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub

    from app.core import hub
    from app.core.errors import OfflineError

    with pytest.raises(OfflineError):
        hub.search_models("x")  # HF_HUB_OFFLINE=1 in tests
    monkeypatch.delenv("HF_HUB_OFFLINE")
    seen = {}

    def fake_list(self, **kw):
        seen.update(kw)
        return iter([SimpleNamespace(id="a/bert", pipeline_tag="text-classification", downloads=10, likes=1,
                                     tags=["safetensors", "bert"], gated=False,
                                     config={"architectures": ["BertForSequenceClassification"]}),
                     SimpleNamespace(id="b/t5", pipeline_tag="text-classification", downloads=5, likes=0,
                                     tags=["safetensors"], gated=False,
                                     config={"architectures": ["T5ForSequenceClassification"]}),
                     SimpleNamespace(id="c/old", pipeline_tag="text-classification", downloads=1, likes=0,
                                     tags=["pytorch"], gated=False, safetensors=None,
                                     config={"architectures": ["BertForSequenceClassification"]})])

    monkeypatch.setattr(huggingface_hub.HfApi, "list_models", fake_list)
    monkeypatch.setattr(hub.search, "quick_probe", lambda endpoint: "")  # no network here: the listing is faked
    hits = hub.search_models("sentiment", "text-classification", limit=3)
    assert seen["search"] == "sentiment" and seen["pipeline_tag"] == "text-classification"
    assert seen["sort"] == "downloads" and seen["limit"] == 3
    assert [h.convertible for h in hits] == [True, False, False]
    assert "T5" in hits[1].reason and "safetensors" in hits[2].reason
    with pytest.raises(ValueError, match="task"):
        hub.search_models("x", "translation")


def test_settings_and_recent_models_persist(qtbot, settings, tmp_path):
    from app.gui.main_window import MainWindow
    from app.gui.settings_dialog import SettingsDialog

    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.add_recent("org/a")
    w.add_recent("org/b")
    w.add_recent("org/a")
    w.resize(1111, 777)
    dialog = SettingsDialog(settings, w)
    dialog.threads.setValue(3)
    dialog.store.setText(str(tmp_path / "store"))
    dialog.theme.setCurrentText("Dark")
    dialog._save()
    w.close()
    again = MainWindow(QSettings(settings.fileName(), QSettings.IniFormat))
    qtbot.addWidget(again)
    again.show()
    assert again.recent() == ["org/a", "org/b"]
    assert again.threads() == 3
    geometry = again.settings.value("window/geometry")
    assert geometry is not None and again.restoreGeometry(geometry)  # (offscreen clamps sizes to its 800x600 screen)
    assert again.choose.recent_combo.count() == 2
    import os
    assert os.environ["POCKET_NLP_HOME"] == str(tmp_path / "store")


def test_dark_theme_applies(qtbot):
    from app.gui.widgets import apply_theme, is_dark

    app = QApplication.instance()
    assert apply_theme(app, "dark") == "dark" and is_dark()
    assert apply_theme(app, "light") == "light" and not is_dark()


def test_gui_package_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; import app.gui, app.gui.main_window, app.gui.worker, app.gui.choose_page, "
            "app.gui.convert_page, app.gui.try_page, app.gui.compare_page, app.gui.library_page; "
            "heavy = [m for m in ('onnxruntime', 'onnx', 'huggingface_hub', 'torch', 'transformers', "
            "'app.core.export', 'app.core.quantize', 'app.core.store', 'PySide6.QtCharts') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_download_step_shows_bytes_speed_and_time_left(window, monkeypatch):
    import app.gui.convert_page as convert_page

    page = window.convert
    clock = iter([100.0, 101.0, 102.0, 103.0])
    monkeypatch.setattr(convert_page.time, "monotonic", lambda: next(clock))
    page.started_at = 100.0
    page._progress(Progress("download", 0, 100_000_000, "Downloading model.safetensors", unit="B"))
    page._progress(Progress("download", 10_000_000, 100_000_000, "Downloading model.safetensors", unit="B"))
    text = page.steps["download"].status.text()
    assert text == "10.0 MB of 100.0 MB · 10.0 MB/s · 9 s left", text
    assert page.steps["download"].state == "running" and 0 < page.overall.value() < 1000
    page._progress(Progress("export", 1, 4, "embeddings"))
    assert page.steps["download"].state == "done" and page.steps["export"].state == "running"
    assert page.overall.value() == int((0.3 + 0.2 * 0.25) * 1000)


def test_a_stale_store_scan_never_overrides_a_newer_one(window, qtbot):
    from types import SimpleNamespace

    qtbot.waitUntil(lambda: getattr(window, "_scan_generation", 0) >= 1, timeout=5000)
    entry = SimpleNamespace(path="/x", name="m", revision=None, task="text-classification", int8_dir=None)
    window._scan_generation = 7
    window.set_entry(entry)
    window._entries_loaded((6, [], {}))  # the start-up scan finishing after a conversion
    assert window.entry is entry
    window._entries_loaded((7, [], {}))
    assert window.entry is None


def test_try_it_shows_each_task_in_its_own_view(window):
    from types import SimpleNamespace

    from app.core.tasks import all_tasks

    page = window.try_it
    for task in all_tasks():
        page.set_entry(SimpleNamespace(path=f"/x/{task.name}", name="m", revision=None, task=task.name, int8_dir="/y"))
        assert page.modes.currentIndex() == page.view_index[task.view], task.name


def test_entities_view_marks_what_only_one_model_finds(window):
    from types import SimpleNamespace

    from PySide6.QtGui import QTextCursor

    from app.core.tasks.base import PredictRequest

    text = "Ana Torres works in Lisbon."
    ana, lisbon = (SimpleNamespace(label="PER", start=0, end=10, score=0.99, word="Ana Torres"),
                   SimpleNamespace(label="LOC", start=20, end=26, score=0.97, word="Lisbon"))
    view = window.try_it.entities_view
    view.show_results(PredictRequest(texts=(text,)), [[ana, lisbon]], [[ana]])
    assert "differ on 1 entities" in view.status.text()
    assert view.table.rowCount() == 2 and view.table.item(1, 4).text() == "only FP32"
    assert "Lisbon" in view.views["fp32"].toPlainText() and "PER" in view.views["int8"].toPlainText()
    cursor = QTextCursor(view.views["fp32"].document())  # what Qt draws: CSS borders on inline text are dropped
    underlined = {}
    for word in ("Ana", "Lisbon"):
        cursor.setPosition(view.views["fp32"].toPlainText().index(word) + 1)
        underlined[word] = cursor.charFormat().fontUnderline()
    assert underlined == {"Ana": False, "Lisbon": True}
    view.show_results(PredictRequest(texts=(text,)), [[ana]], [[ana]])
    assert "same 1 entities" in view.status.text()


def test_search_view_shows_both_rankings_and_where_they_differ(window):
    from types import SimpleNamespace

    from app.core.tasks.base import PredictRequest

    docs = ("plants and sunlight", "a river", "a tower")

    def result(order, ms):
        hits = tuple(SimpleNamespace(index=i, score=1 - 0.1 * r, text=docs[i]) for r, i in enumerate(order))
        return SimpleNamespace(hits=hits, latency_ms=ms)

    view = window.try_it.search_view
    view.show_results(PredictRequest(texts=docs, query="energy"), result([0, 1, 2], 2.0), result([0, 2, 1], 1.0))
    assert view.tables["int8"].item(1, 0).text() == "2 (FP32 #3)" and view.tables["fp32"].item(0, 2).text() == docs[0]
    assert view.status.text().startswith("Same best match")


def test_try_it_warns_about_near_ties_and_unlikely_answers(window):
    from types import SimpleNamespace

    from app.gui.try_page import ResultCard

    def result(a, b):
        return SimpleNamespace(label="POSITIVE", score=a, latency_ms=1.0,
                               scores=[SimpleNamespace(label="POSITIVE", score=a), SimpleNamespace(label="NEG", score=b)])

    tie = ResultCard("so-so", result(0.52, 0.48), result(0.51, 0.49))
    clear = ResultCard("great", result(0.97, 0.03), result(0.96, 0.04))
    from PySide6.QtWidgets import QLabel

    def names(card):
        return [w.accessibleName() for w in card.findChildren(QLabel)]

    assert "Low confidence" in names(tie) and "Low confidence" not in names(clear)
    page = window.try_it
    page.entry = SimpleNamespace(path="/x", int8_dir="/y")
    context = "Gustave Eiffel built a tower in Paris."
    unlikely = SimpleNamespace(text="Gustave Eiffel", start=0, end=14, score=0.007, latency_ms=2.0)
    page._answered(("/x", context, unlikely, unlikely))
    answer, meta, _ = page.answer_views["fp32"]
    assert "low confidence" in meta.text() and answer.property("role") == "muted"


def test_error_dialog_titles_copy_and_what_is_supported(window, tmp_path):
    from PySide6.QtWidgets import QApplication

    from app.core.errors import DamagedEntryError, NotAModelFolderError, UnsupportedModelError
    from app.gui.widgets import ErrorDialog, error_title

    assert error_title(NotAModelFolderError("x")) == "Not a model folder"
    assert error_title(DamagedEntryError("x")) == "This converted model is damaged"
    dialog = ErrorDialog(UnsupportedModelError("t5 is not supported.", supported=("BertForMaskedLM",)), window)
    assert "BertForMaskedLM" not in dialog.message.text() and "BertForMaskedLM" in dialog.details.toPlainText()
    dialog.copy.click()
    assert "t5 is not supported." in QApplication.clipboard().text() and dialog.copy.text() == "Copied"
    tried = []
    again = ErrorDialog(NotAModelFolderError("x"), window, retry=lambda: tried.append(1))
    assert again.retry is not None and ErrorDialog(NotAModelFolderError("x"), window).retry is None
    again.retry.click()
    assert tried == [1]


def test_compare_lists_every_difference_filters_them_and_opens_one_in_try_it(window, qtbot, monkeypatch):
    from types import SimpleNamespace

    page, opened = window.compare, []
    monkeypatch.setattr(window.try_it, "open_example", opened.append)
    diffs = [{"where": f"line {i}", "input": f"text number {i}", "gold": ["POSITIVE"], "fp32": "POSITIVE",
              "int8": "NEGATIVE", "fp32_score": 0.55, "int8_score": 0.51} for i in range(120)]
    page.entry = SimpleNamespace(path="/x", name="m", manifest={}, int8_dir="/y", task="text-classification")
    page.evaluation = {"task": "text-classification", "data": "dev.tsv", "examples": 872, "agreement": 0.86,
                       "n_disagreements": 120, "disagreements": diffs}
    page._fill()
    view = page.differences
    assert not view.isHidden() and view.table.rowCount() == 120 and "120 of 872" in view.title.text()
    view.filter.setText("number 11")
    assert sum(not view.table.isRowHidden(r) for r in range(120)) == 11  # 11, 110..119
    view._activated(view.table.item(11, 1))
    assert opened == [diffs[11]] and window.current_page_name() == "Try it"


def test_charts_follow_the_theme_round_their_ticks_and_show_accuracy(window, qtbot):
    from types import SimpleNamespace

    from PySide6.QtCharts import QChartView, QValueAxis
    from PySide6.QtWidgets import QApplication

    from app.gui.widgets import apply_theme

    side = {"file_bytes": 90e6, "memory_bytes": 166e6, "p50_ms": 83.1, "p95_ms": 125.0, "latencies_ms": [80, 85, 90]}
    page = window.compare
    page.entry = SimpleNamespace(path="/x", name="m", manifest={}, int8_dir="/y", task="text-classification")
    page.bench = {"fp32": side, "int8": dict(side, p50_ms=40.0), "ratios": {"p50": 2.0}, "config": {}}
    page.evaluation = {"task": "text-classification", "data": "dev.tsv", "examples": 872, "agreement": 0.99,
                       "fp32": {"metrics": {"accuracy": 0.87}}, "delta": {"accuracy": -0.002}, "disagreements": []}
    apply_theme(QApplication.instance(), "light")
    page._fill()
    views = page.charts_widget.findChildren(QChartView)
    assert any("Accuracy on dev.tsv" in v.chart().title() for v in views)
    light = views[0].chart().backgroundBrush().color().lightness()
    for v in views[:2]:
        axis = next(a for a in v.chart().axes() if isinstance(a, QValueAxis))
        assert axis.max() == round(axis.max()) and axis.max() >= 125  # nice numbers, not 166 / 83.1
    apply_theme(QApplication.instance(), "dark")
    qtbot.waitUntil(lambda: page.charts_widget is not None and page.charts_widget.findChildren(QChartView)[0]
                    .chart().backgroundBrush().color().lightness() < light, timeout=5000)
    apply_theme(QApplication.instance(), "light")


def test_hub_search_gives_up_quickly_offline_and_can_be_cancelled(window, qtbot, monkeypatch):
    import threading
    import time

    from hubfixtures import closed_port_url

    from app.core import hub
    from app.core.errors import OfflineError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    start = time.monotonic()
    with pytest.raises(OfflineError, match="cannot connect"):
        hub.search_models("sentiment")
    assert time.monotonic() - start < 5
    release = threading.Event()

    def slow_search(query, task, limit):
        release.wait(10)
        return [hub.HubModel("org/late", task, 1, convertible=True)]

    monkeypatch.setattr(hub, "search_models", slow_search)
    choose = window.choose
    choose.search_edit.setText("sentiment")
    choose.search()
    assert not choose.search_busy.isHidden() and not choose.search_cancel.isHidden()
    choose.search_cancel.click()
    assert choose.search_status.text() == "Search cancelled." and choose.search_busy.isHidden()
    release.set()
    qtbot.wait(300)
    assert choose.search_table.rowCount() == 0  # the late answer is dropped


def test_choose_shows_how_a_model_fits_this_computer(window, qtbot, tiny_models):
    from app.core.fit import estimate

    choose = window.choose
    choose.model_edit.setText("sentence-transformers/all-MiniLM-L6-v2")  # a suggested model: size known
    qtbot.waitUntil(lambda: not choose.fit_label.isHidden(), timeout=10000)
    assert "Download 91 MB" in choose.fit_label.text() and "INT8" in choose.fit_label.text()
    choose.model_edit.setText(str(tiny_models("bert", "sequence-classification")))  # a folder: its files
    qtbot.waitUntil(lambda: "Download 0 MB" in choose.fit_label.text(), timeout=10000)
    choose.model_edit.setText("org/unknown")
    assert choose.fit_label.isHidden()
    fast, slow = estimate(90_000_000, gflops=100), estimate(1_400_000_000, gflops=10)
    assert fast.runs_well and not slow.runs_well and slow.int8_ms > fast.int8_ms
