"""What a store entry is identified by: the sha256 of every file of its source that changes answers, remembered by
stat so that resolving a folder to its content costs a stat when nothing changed; and the entry's folder name."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from app.core.hub import POOLING_FILES, TOKENIZER_FILES, ModelSource

log = logging.getLogger(__name__)

_HASHES = ".hashes.json"


class Hashes:
    """sha256 of files, remembered in the store's `.hashes.json` by (real path, size, mtime, inode), as git's
    index does: a file is read again only when it changed, so resolving a folder to its content costs a stat."""

    def __init__(self, root: Path):
        self.path = Path(root) / _HASHES
        try:
            self.known = json.loads(self.path.read_text(encoding="utf-8"))
            assert isinstance(self.known, dict)
        except (OSError, ValueError, AssertionError):
            self.known = {}
        self.changed = False

    def sha256(self, file: Path) -> str:
        real = Path(file).resolve()  # HF cache snapshots are symlinks into blobs/
        st = real.stat()
        key, stamp = str(real), [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.known.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp and isinstance(hit[3], str):
            return hit[3]
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        self.known[key] = [*stamp, h.hexdigest()]
        self.changed = True
        return h.hexdigest()

    def save(self) -> None:
        if not self.changed:
            return
        if len(self.known) > 4000:  # a cache, not a record: keep the newest
            self.known = dict(list(self.known.items())[-2000:])
        try:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.known), encoding="utf-8")
            os.replace(tmp, self.path)
            self.changed = False
        except OSError as e:  # a read-only store still works, only slower
            log.info("cannot save %s: %s", self.path, e)


def source_files(source: ModelSource) -> list[str]:
    """The files of a source that change answers, relative to its folder: weights (or the exported graph),
    config.json, tokenizer and pooling files."""
    folder = source.path
    model = [source.onnx_file] if source.onnx_file else list(source.weight_files)
    if source.onnx_file and (folder / "model.onnx.data").is_file():
        model.append(folder / "model.onnx.data")
    names = [p.relative_to(folder).as_posix() for p in model]
    names += [n for n in ("config.json", *TOKENIZER_FILES, *POOLING_FILES) if (folder / n).is_file()]
    names += sorted(p.relative_to(folder).as_posix() for p in folder.glob("*_Pooling/config.json"))
    return names


def content_id(source: ModelSource, hashes: Hashes) -> tuple[str, dict[str, str]]:
    """(digest of the source's content, {file: sha256}): the identity of what a conversion reads."""
    files = {name: hashes.sha256(source.path / name) for name in source_files(source)}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest(), files


def entry_dirname(source: ModelSource, content: str) -> str:
    """`org_name_<content12>` or `local_<folder>_<content12>`: no '@', no '--', nothing a Hub id could be."""
    base = source.ref.repo_id.replace("/", "_") if source.ref.repo_id else f"local_{source.path.name}"
    base = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "_", base)).strip("._-") or "model"
    return f"{base[:80]}_{content[:12]}"


