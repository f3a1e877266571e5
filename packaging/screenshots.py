"""Screenshots of every page at 1280x800 (or --size 1024x640), in the light and dark themes, for a person to look at.

    xvfb-run -s "-screen 0 1280x800x24" .venv/bin/python packaging/screenshots.py [--out screenshots] [--size WxH]

Runs the real app against a temporary store and an offline, empty Hugging Face cache: it converts the real
checkpoints in ../shared/models when they are there (else the tiny test models), benchmarks, evaluates, and
fills every page the way a user would, then saves PNGs to `screenshots/` (git-ignored). Without a display it
falls back to Qt's offscreen platform (fonts may differ from a desktop).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EMBEDDER = Path.home() / ".cache" / "pocket-nlp-tests" / "all-MiniLM-L6-v2"  # unpacked by tests/test_embeddings.py
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def wait_until(cond, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("the app did not get there in time")
        settle(50)


def settle(ms: int = 300) -> None:
    """Let the app run for `ms`. An event loop, not QTest.qWait: qWait keeps Python's GIL while it waits, so
    the app's worker threads stalled between steps (a 3 s conversion took 40 s)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def models(tmp: Path) -> tuple[Path, Path, Path | None]:
    """(classification model, QA model, labelled data file or None)."""
    sst2, squad = SHARED / "models" / "minilm-sst2", SHARED / "models" / "minilm-squad"
    data = next(iter(sorted((SHARED / "data").glob("sst2*.tsv"))), None) if (SHARED / "data").is_dir() else None
    if (sst2 / "config.json").is_file() and (squad / "config.json").is_file():
        return sst2, squad, data
    from tinymodels import make_tiny_model
    return (make_tiny_model(tmp, "bert", "sequence-classification"),
            make_tiny_model(tmp, "bert", "question-answering"), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    parser.add_argument("--themes", default="light,dark")
    parser.add_argument("--size", default="1280x800", help="window size, e.g. 1024x640 (a small laptop screen)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pocket-shots-"))
    os.environ.update(POCKET_NLP_HOME=str(tmp / "store"), HF_HOME=str(tmp / "hf"), HF_HUB_CACHE=str(tmp / "hf" / "hub"),
                      HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(tmp / "config"))
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui import create_app
    from app.gui.main_window import MainWindow
    from app.gui.widgets import ErrorDialog, apply_theme

    app = create_app([sys.argv[0]])
    cls_model, qa_model, data = models(tmp)
    shots: list[Path] = []

    def shoot(widget, name: str) -> None:
        settle()
        path = out / f"{name}.png"
        screen = QApplication.primaryScreen()
        pixmap = screen.grabWindow(0) if os.environ.get("DISPLAY") else widget.window().grab()
        pixmap.save(str(path))
        shots.append(path)

    entries = {}
    for theme in args.themes.split(","):
        apply_theme(app, theme)
        settings = QSettings(str(tmp / f"settings-{theme}.ini"), QSettings.IniFormat)
        settings.setValue("recent", ["distilbert/distilbert-base-uncased-finetuned-sst-2-english", str(cls_model)])
        w = MainWindow(settings)
        w.resize(*(int(v) for v in args.size.lower().split("x")))
        w.move(0, 0)
        w.show()
        settle(600)
        w.choose.tabs.setCurrentIndex(0)
        w.choose.banner.hide()  # shown once in the "on this computer" shot below
        w.choose.curated_table.selectRow(0)
        shoot(w, f"{theme}-1-choose-suggested")
        w.choose.update_offline()
        wait_until(lambda: w.choose.local_table.rowCount() > 0 or theme == "light", 10)
        shoot(w, f"{theme}-1b-choose-on-this-computer")

        # Convert (the first theme converts for real; the second reuses the stored entries)
        for key, model in (("qa", qa_model), ("cls", cls_model)):
            w.choose.model_edit.setText(str(model))
            w.choose.convert_clicked()
            if key == "cls":  # mid-way (only when it really converts; a stored entry is reused at once)
                try:
                    wait_until(lambda: w.convert.stage == "quantize" or not w.convert.running(), 600)
                    if w.convert.running():
                        w.convert.log_button.setChecked(True)
                        shoot(w, f"{theme}-2a-convert-running")
                        w.convert.log_button.setChecked(False)
                except TimeoutError:
                    pass
            wait_until(lambda: not w.convert.running(), 900)
            entries[key] = w.convert.entry
        w.convert.log_button.setChecked(True)
        shoot(w, f"{theme}-2-convert-done")
        w.convert.log_button.setChecked(False)

        # Try it: classification, then QA
        w.set_entry(entries["cls"])
        w.show_page("Try it")
        w.try_it.text_edit.setPlainText("What a wonderful, heartfelt film. I loved every minute.\n"
                                        "The plot was dull and the acting even worse.\n"
                                        "It is not the best movie of the year, but it is not bad at all.")
        w.try_it.last_results = None
        w.try_it.classify()
        wait_until(lambda: w.try_it.last_results is not None, 120)
        shoot(w, f"{theme}-3-try-classification")
        w.set_entry(entries["qa"])
        w.try_it.last_results = None
        w.try_it.answer()
        wait_until(lambda: w.try_it.last_results is not None, 120)
        shoot(w, f"{theme}-3b-try-question-answering")
        # Named entities and search, with the real checkpoints when they are here
        for key, model, view in (("ner", SHARED / "models" / "minilm-conll", "entities"),
                                 ("emb", EMBEDDER, "search"), ("gen", SHARED / "models" / "tinygpt2-en", "generation")):
            if not (model / "config.json").is_file():
                continue
            if key not in entries:
                w.choose.model_edit.setText(str(model))
                w.choose.convert_clicked()
                wait_until(lambda: not w.convert.running(), 900)
                entries[key] = w.convert.entry
            w.set_entry(entries[key])
            w.show_page("Try it")
            w.try_it.last_results = None
            getattr(w.try_it, f"{view}_view").run()
            wait_until(lambda: w.try_it.last_results is not None or not w.try_it._busy(), 120)
            shoot(w, f"{theme}-3c-try-{view}")

        # Compare: benchmark (+ evaluation when a labelled file is there)
        w.set_entry(entries["cls"])
        w.show_page("Compare")
        w.compare.runs.setValue(20)
        w.compare.run_benchmark()
        wait_until(lambda: not w.compare.running(), 600)
        if data is not None:
            w.compare.evaluate_file(data, limit=200)
            wait_until(lambda: not w.compare.running(), 600)
        shoot(w, f"{theme}-4-compare")
        scroll = w.compare.findChild(__import__("PySide6.QtWidgets", fromlist=["QScrollArea"]).QScrollArea)
        scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
        shoot(w, f"{theme}-4b-compare-charts")

        w.show_page("Library")
        wait_until(lambda: w.library.table.rowCount() >= 2, 30)
        w.library.select(0)
        shoot(w, f"{theme}-5-library")
        sst2 = next(r for r in range(w.library.table.rowCount()) if "sst2" in w.library.table.item(r, 0).text())
        w.library.select(sst2)
        w.library.use_selected()
        wait_until(lambda: w.library.use_dialog.table.rowCount() > 0, 60)
        shoot(w, f"{theme}-5b-use-it")
        w.library.use_dialog.findChild(__import__("PySide6.QtWidgets", fromlist=["QTabWidget"]).QTabWidget) \
            .setCurrentIndex(1)
        shoot(w, f"{theme}-5c-inspect")
        w.library.use_dialog.reject()

        w.open_settings()
        shoot(w, f"{theme}-6-settings")
        w._settings_dialog.reject()

        from app.core.errors import ModelNotFoundError
        w.show_page("Choose model")
        dialog = ErrorDialog(ModelNotFoundError("nobody/no-such-model was not found on the Hub. Check the spelling "
                                                "(org/name). If it is a private model, log in with `hf auth login` "
                                                "or set HF_TOKEN to a token that can read it."), w)
        dialog.open()
        dialog.toggle.click()
        shoot(w, f"{theme}-7-error-dialog")
        dialog.accept()
        w.close()
        settle()
    for p in shots:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
