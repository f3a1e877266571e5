"""The desktop face of Pocket NLP (Qt only; it calls app.core through one worker pattern)."""

from __future__ import annotations


def run_gui(argv: list[str] | None = None) -> int:
    import sys

    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Pocket NLP")
    window = QMainWindow()
    window.setWindowTitle("Pocket NLP")
    label = QLabel("Pocket NLP — the desktop app is coming. Use `python -m app --help` for the command line.")
    label.setMargin(24)
    window.setCentralWidget(label)
    window.resize(1280, 800)
    window.show()
    return app.exec()
