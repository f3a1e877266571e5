"""Settings that persist across runs: store location, threads, offline mode, Hub login, theme."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLineEdit, QSpinBox, QVBoxLayout, QWidget)

from app.gui import widgets


class SettingsDialog(QDialog):
    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        lay.addWidget(widgets.label("Settings", "section"))
        form = QFormLayout()
        form.setLabelAlignment(form.labelAlignment())

        self.store = QLineEdit(str(settings.value("store_location", "") or ""))
        self.store.setPlaceholderText(self._default_store())
        self.store.setAccessibleName("Store location")
        browse = widgets.button("Browse...", "Browse for the store location")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.store, 1)
        row.addWidget(browse)
        store_label = widgets.label("&Converted models folder:")
        store_label.setBuddy(self.store)
        form.addRow(store_label, row)

        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("Automatic")
        self.threads.setValue(int(settings.value("threads", 0) or 0))
        self.threads.setAccessibleName("CPU threads")
        form.addRow("CPU &threads:", self.threads)

        self.offline = QCheckBox("Work offline (use only models already on this computer)")
        self.offline.setChecked(str(settings.value("offline", "false")).lower() in ("true", "1"))
        self.offline.setAccessibleName("Offline mode")
        form.addRow("", self.offline)

        self.token = QLineEdit(str(settings.value("hub_token", "") or ""))
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("hf_... (only for gated or private models)")
        self.token.setAccessibleName("Hugging Face token")
        form.addRow("Hugging Face &token:", self.token)

        self.theme = QComboBox()
        self.theme.addItems(["System", "Light", "Dark"])
        self.theme.setCurrentText(str(settings.value("theme", "system")).capitalize())
        self.theme.setAccessibleName("Theme")
        form.addRow("T&heme:", self.theme)
        lay.addLayout(form)
        lay.addWidget(widgets.label("The token is stored in this app's settings on this computer only.", "muted",
                                    wrap=True))
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    @staticmethod
    def _default_store() -> str:
        try:
            from app.core.store import store_root
            return f"Default: {store_root()}"
        except Exception:  # noqa: BLE001 - only a placeholder
            return "Default location"

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for converted models", self.store.text())
        if folder:
            self.store.setText(folder)

    def _save(self) -> None:
        s = self.settings
        s.setValue("store_location", self.store.text().strip())
        s.setValue("threads", self.threads.value())
        s.setValue("offline", self.offline.isChecked())
        s.setValue("hub_token", self.token.text().strip())
        s.setValue("theme", self.theme.currentText().lower())
        s.sync()
        self.accept()
