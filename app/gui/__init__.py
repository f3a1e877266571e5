"""The desktop face of Pocket NLP (Qt only; it calls app.core through one worker pattern, app/gui/worker.py).

Start-up stays under two seconds because nothing heavy loads here: onnxruntime, onnx, huggingface_hub, the
exporter, the quantizer and QtCharts are imported inside the worker functions and pages that need them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def app_icon():
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        png = RESOURCES / f"icon-{size}.png"
        if png.is_file():
            icon.addFile(str(png))
    return icon


def create_app(argv: list[str] | None = None):
    """The QApplication with our name, icon and theme (reused if one exists, as under pytest-qt)."""
    from PySide6.QtCore import QCoreApplication, QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.widgets import apply_theme

    QCoreApplication.setOrganizationName("PocketNLP")
    QCoreApplication.setApplicationName("Pocket NLP")
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationDisplayName("Pocket NLP")
    app.setWindowIcon(app_icon())
    theme = os.environ.get("POCKET_NLP_THEME") or str(QSettings().value("theme", "system"))
    apply_theme(app, theme)
    return app


def missing_display() -> str:
    """Why no window can open here ("" when one can): a Linux session without X11 or Wayland, where Qt would
    abort inside its platform plugin instead of saying so."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return ""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return ""
    return ("Pocket NLP's window needs a display, and this session has none (DISPLAY and WAYLAND_DISPLAY are not "
            "set, e.g. over ssh). Start it from a desktop session (or `ssh -X`), or use the command line: every "
            "action works headless, see `pocket-nlp --help`.")


def run_gui(argv: list[str] | None = None) -> int:
    problem = missing_display()
    if problem:
        print(f"Error: {problem}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(argv)
    from app.gui.main_window import MainWindow

    window = MainWindow()
    window.show()
    if os.environ.get("POCKET_NLP_STARTUP_PROBE"):  # tests/benchmarks/bench_startup.py: quit once interactive
        from PySide6.QtCore import QTimer

        def probe():
            import time
            heavy = [m for m in ("onnxruntime", "onnx", "huggingface_hub", "numpy", "app.core.store",
                                 "PySide6.QtCharts") if m in sys.modules]
            print(f"POCKET_NLP_INTERACTIVE {time.time():.6f} {','.join(heavy) or 'none'}", flush=True)
            app.quit()

        QTimer.singleShot(0, probe)
    return app.exec()
