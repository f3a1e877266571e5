"""Use it: take a converted model elsewhere — export its INT8 folder, copy code that runs it, and inspect which
parts are INT8 and which stayed FP32 (and why)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QPlainTextEdit, QTableWidgetItem,
                               QTabWidget, QVBoxLayout, QWidget)

from app.gui import widgets
from app.gui.worker import start_task


class UseItDialog(QDialog):
    def __init__(self, entry, parent=None):
        super().__init__(parent)
        self.entry = entry
        self.setWindowTitle(f"Use {entry.name}")
        self.setMinimumSize(760, 520)
        lay = QVBoxLayout(self)
        folder = entry.int8_dir or entry.fp32_dir
        which = "INT8" if entry.int8_dir else "FP32 (no INT8 was kept)"
        lay.addWidget(widgets.label(f"The {which} model is a folder with model.onnx, config.json and the tokenizer; "
                                    "it runs with onnxruntime and tokenizers alone, no PyTorch.", wrap=True))
        tabs = QTabWidget()
        lay.addWidget(tabs, 1)

        code_tab = QWidget()
        code_lay = QVBoxLayout(code_tab)
        from app.core.precisions import code_snippet
        self.code = QPlainTextEdit(code_snippet(folder, entry.manifest.get("spec") or {}))
        self.code.setReadOnly(True)
        from PySide6.QtGui import QFontDatabase
        self.code.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.code.setLineWrapMode(QPlainTextEdit.NoWrap)  # code reads line by line
        self.code.setAccessibleName("Code that runs the model")
        code_lay.addWidget(self.code, 1)
        row = QHBoxLayout()
        self.copy_button = widgets.primary_button("&Copy code", "Copy the code")
        self.copy_button.clicked.connect(self.copy_code)
        row.addWidget(self.copy_button)
        self.export_button = widgets.button("&Export the model folder...", "Export the model folder")
        self.export_button.clicked.connect(self.export_clicked)
        row.addWidget(self.export_button)
        row.addStretch(1)
        code_lay.addLayout(row)
        self.status = widgets.label("", "muted", wrap=True, selectable=True)
        code_lay.addWidget(self.status)
        tabs.addTab(code_tab, "Code")

        inspect_tab = QWidget()
        inspect_lay = QVBoxLayout(inspect_tab)
        self.inspect_summary = widgets.label("Reading the INT8 graph…" if entry.int8_dir else
                                             "No INT8 model was kept, so every part is FP32.", "muted", wrap=True)
        inspect_lay.addWidget(self.inspect_summary)
        self.table = widgets.data_table(["Part of the model", "Runs in", "Why"], "Which parts are INT8", stretch=2)
        inspect_lay.addWidget(self.table, 1)
        tabs.addTab(inspect_tab, "Inspect")

        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        if entry.int8_dir:
            quantization = entry.manifest.get("quantization") or {}

            def read(progress, cancel):
                from app.core.precisions import node_precisions
                return node_precisions(entry.int8_dir / "model.onnx", quantization)

            self.task = start_task(read, self, name="inspect", on_result=self._inspected,
                                   on_error=lambda e: self.inspect_summary.setText(f"Cannot read the graph: {e}"))

    def copy_code(self) -> None:
        from PySide6.QtWidgets import QApplication

        QApplication.clipboard().setText(self.code.toPlainText())
        self.copy_button.setText("Copied")

    def export_clicked(self) -> None:
        target = QFileDialog.getExistingDirectory(self, "Export the model folder into")
        if target:
            self.export_to(Path(target))

    def export_to(self, parent_folder: Path) -> None:
        source = self.entry.int8_dir or self.entry.fp32_dir
        dest = parent_folder / f"{self.entry.path.name}-{'int8' if self.entry.int8_dir else 'fp32'}"

        def copy(progress, cancel):
            import os
            import shutil
            import tempfile
            if dest.exists():
                raise FileExistsError(f"{dest} already exists; choose another folder.")
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=parent_folder))
            try:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
                os.replace(tmp, dest)  # complete or absent, never half-copied
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return dest

        self.export_button.setEnabled(False)
        self.status.setText("Copying…")
        start_task(copy, self, name="export-folder", on_result=self._exported, on_error=self._export_failed,
                   on_finished=lambda: self.export_button.setEnabled(True))

    def _exported(self, dest) -> None:
        from app.core.precisions import code_snippet
        self.code.setPlainText(code_snippet(dest, self.entry.manifest.get("spec") or {}))
        self.status.setText(f"Exported to {dest}. The code above now points there.")

    def _export_failed(self, e) -> None:
        self.status.setText(f"Export failed: {e}")

    def _inspected(self, rows) -> None:
        int8 = sum(r.precision == "INT8" for r in rows)
        self.inspect_summary.setText(f"{int8} of the {len(rows)} heavy parts run in INT8; the others stay FP32 for "
                                     "the reason given. Element-wise steps (additions, normalisation) stay FP32.")
        self.table.setRowCount(0)
        for r in rows:
            i = self.table.rowCount()
            self.table.insertRow(i)
            for c, text in enumerate((r.name, r.precision, r.why)):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setToolTip(f"{r.op}: {r.name}")
                self.table.setItem(i, c, item)
