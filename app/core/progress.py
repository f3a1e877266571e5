"""Progress reporting and cooperative cancel, shared by every core stage.

Stages take `progress: ProgressFn | None` and `cancel: threading.Event | None`. Progress is a plain
callable (the GUI wraps it in one Qt bridge, the CLI in a progress bar); it may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from app.core.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    stage: str  # "download", "export", "optimize", "quantize", "validate", "bench", "eval", ...
    done: float  # units of `total`; bytes for downloads
    total: float | None = None  # None when unknown
    message: str = ""
    unit: str = ""  # "B" for bytes, "" for steps

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, stage: str, done: float, total: float | None = None,
           message: str = "", unit: str = "") -> None:
    if progress is not None:
        progress(Progress(stage, done, total, message, unit))


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise CancelledError if the user asked to stop; call between steps."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("Cancelled by the user; nothing was written.")
