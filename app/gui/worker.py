"""The one worker pattern of the GUI: run one core call on a QThread.

    fn(progress=..., cancel=...) ──► Worker (QObject, lives on its QThread)
                                      signals: started, progress, result, error, finished
    Task (QObject, GUI thread) ◄───── queued connections to its @Slot methods, which call plain callbacks

The core reports progress through a plain callable; `ProgressBridge` is the one QObject that turns those calls
(from any thread) into a Qt signal. Cancel is cooperative: `Task.cancel()` sets a threading.Event that the core
checks between steps. Callbacks given to `start_task` always run on the GUI thread, because they are called
from slots of the `Task`, which lives there. Connections are made before the thread starts; nothing here ever
calls processEvents().
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)


class ProgressBridge(QObject):
    """A plain progress callable for the core; each call emits `progressed` (throttled to ~30 per second,
    except for stage changes and the last step of a stage, which always pass)."""

    progressed = Signal(object)

    def __init__(self, interval: float = 0.03):
        super().__init__()
        self._interval = interval
        self._last = 0.0
        self._stage = None

    def __call__(self, p) -> None:
        now = time.monotonic()
        last_step = p.total is not None and p.done >= p.total
        if p.stage == self._stage and not last_step and now - self._last < self._interval:
            return
        self._stage, self._last = p.stage, now
        self.progressed.emit(p)


class Worker(QObject):
    """Runs `fn(progress=bridge, cancel=event)` once, on whatever thread it lives on."""

    started = Signal()
    progress = Signal(object)
    result = Signal(object)
    error = Signal(object)  # the exception
    finished = Signal()

    def __init__(self, fn: Callable[..., Any], name: str = "task"):
        super().__init__()
        self.fn = fn
        self.name = name
        self.cancel_event = threading.Event()
        self.bridge = ProgressBridge()
        self.bridge.progressed.connect(self.progress)

    @Slot()
    def run(self) -> None:
        self.started.emit()
        try:
            value = self.fn(progress=self.bridge, cancel=self.cancel_event)
        except BaseException as e:  # noqa: BLE001 - every failure goes to the GUI as a dialog, never a crash
            if type(e).__name__ == "CancelledError":
                log.info("%s cancelled", self.name)
            else:
                log.warning("%s failed: %s", self.name, e, exc_info=True)
            self.error.emit(e)
        else:
            self.result.emit(value)
        finally:
            self.finished.emit()


class Task(QObject):
    """The GUI-thread end of a running worker: forwards its signals to plain callbacks and cleans up."""

    def __init__(self, worker: Worker, parent: QObject | None, *, on_result=None, on_error=None, on_progress=None,
                 on_started=None, on_finished=None):
        super().__init__(parent)
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(f"pocket-{worker.name}")
        self.callbacks = {"result": on_result, "error": on_error, "progress": on_progress, "started": on_started,
                          "finished": on_finished}
        self.running = False
        worker.moveToThread(self.thread)
        worker.bridge.moveToThread(self.thread)
        worker.started.connect(self._started)
        worker.progress.connect(self._progress)
        worker.result.connect(self._result)
        worker.error.connect(self._error)
        worker.finished.connect(self._finished)
        self.thread.started.connect(worker.run)

    def start(self) -> Task:
        self.running = True
        _LIVE.add(self)
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.worker.cancel_event.set()

    def _call(self, name: str, *args) -> None:
        fn = self.callbacks.get(name)
        if fn is not None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a broken callback must not take the app down
                log.exception("callback %s of %s failed", name, self.worker.name)

    @Slot()
    def _started(self) -> None:
        self._call("started")

    @Slot(object)
    def _progress(self, p) -> None:
        self._call("progress", p)

    @Slot(object)
    def _result(self, value) -> None:
        self.running = False  # delivered: the next action may start from this callback on (the thread ends soon)
        self._call("result", value)

    @Slot(object)
    def _error(self, e) -> None:
        self.running = False
        self._call("error", e)

    @Slot()
    def _finished(self) -> None:
        self.running = False
        self.thread.quit()
        self.thread.wait(2000)
        self._call("finished")
        _LIVE.discard(self)


_LIVE: set[Task] = set()  # keeps running tasks (and their threads) alive until they finish


def start_task(fn: Callable[..., Any], parent: QObject | None = None, *, name: str = "task", **callbacks) -> Task:
    """Run `fn(progress=, cancel=)` on a new QThread; callbacks (on_result, on_error, on_progress, on_started,
    on_finished) run on the GUI thread."""
    return Task(Worker(fn, name), parent, **callbacks).start()


def stop_all(timeout_ms: int = 3000) -> None:
    """Cancel every running task and wait for its thread (on quit)."""
    tasks = list(_LIVE)
    for t in tasks:
        t.cancel()
    for t in tasks:
        t.thread.quit()
        t.thread.wait(timeout_ms)
