"""Crash-safe cleanup and the conversion lock: what a killed conversion left (partial and swapped-out folders,
temp files, locks of dead processes) is removed at the next store access; work of a living process never is."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from app.core.errors import StoreError

log = logging.getLogger(__name__)

_LEFTOVER = re.compile(r"^\..+\.(?:partial|old|deleted)-(\d+)(?:-.*)?$")
_LOCK = re.compile(r"^\..+\.lock$")


def _alive(pid: int) -> bool:
    import psutil

    return pid > 0 and psutil.pid_exists(pid)


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def clean_leftovers(root: Path | None = None) -> tuple[int, int]:
    """Remove what killed conversions left (partial and swapped-out folders, temp files, stale locks of dead
    processes); returns (items removed, bytes reclaimed). Work of a living process is never touched."""
    from app.core.store.entries import store_root

    root = Path(root or store_root())
    removed = reclaimed = 0
    try:
        items = list(root.iterdir())
    except OSError:
        return 0, 0
    for item in items:
        name = item.name
        if not name.startswith("."):
            continue
        if _LOCK.match(name):
            try:
                pid = int(item.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
        elif m := (_LEFTOVER.match(name) or re.match(r"^\..+\.(\d+)\.tmp$", name)):
            pid = int(m[1])
        else:
            continue
        if _alive(pid):
            continue
        try:
            size = _tree_bytes(item)
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        except OSError as e:
            log.info("cannot remove the leftover %s: %s", item, e)
            continue
        removed, reclaimed = removed + 1, reclaimed + size
    if removed:
        log.info("removed %d leftovers of interrupted conversions from %s (%.1f MB)", removed, root, reclaimed / 1e6)
    return removed, reclaimed


class Lock:
    """An exclusive lock file next to the entry; stale locks of dead processes are taken over."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise StoreError(f"This model is already being converted (process {pid}). Wait for it to "
                                     "finish, or stop it, then try again.") from None
                self.path.unlink(missing_ok=True)
        raise StoreError(f"Cannot lock {self.path}; try again.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)

