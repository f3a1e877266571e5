"""Offline stand-ins for the Hugging Face Hub, for tests of app.core.hub.

`lay_in_cache` writes a model into an HF cache in its documented layout (`models--org--name/refs/<rev>`,
`blobs/<hash>`, `snapshots/<sha>/<file>` → symlink to the blob). `FakeHub` is a tiny Hub on 127.0.0.1 that
serves what huggingface_hub's downloads use: `GET /api/models/{repo}/revision/{rev}?blobs=True` (model_info
with file sizes and LFS metadata) and `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with X-Repo-Commit, ETag,
X-Linked-Etag/X-Linked-Size for LFS files, Content-Length, Range and the X-Error-Code headers behind
huggingface_hub's RepositoryNotFound / RevisionNotFound / EntryNotFound / GatedRepo errors. (olah, a real
self-hosted mirror, needs git repos and a subprocess and cannot stall or fail on cue; this can.)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".model")


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under folder, as {relative posix path: bytes}."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def commit_sha(files: dict[str, bytes], salt: str = "") -> str:
    h = hashlib.sha1(salt.encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha1(files[name]).digest())
    return h.hexdigest()


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_in_cache(cache: Path, repo_id: str, files: dict[str, bytes] | Path, *, sha: str | None = None,
                 refs: tuple[str, ...] = ("main",), symlinks: bool = True) -> Path:
    """Put a model into an HF cache as huggingface_hub would; returns the snapshot folder."""
    files = folder_files(files) if isinstance(files, Path) else files
    sha = sha or commit_sha(files)
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / sha
    for name, data in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            blob = repo / "blobs" / (hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES)
                                     else git_blob_sha(data))
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            target.write_bytes(data)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return snapshot


def closed_port_url() -> str:
    """An http://127.0.0.1:PORT URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class FakeRepo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag → sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha → files
    access: str = "public"  # "public", "gated" (files 403 GatedRepo), "private" (401 RepoNotFound)
    pull_requests: list[dict] = field(default_factory=list)  # as /api/models/{repo}/discussions lists them


class FakeHub:
    """A few Hub endpoints on 127.0.0.1, for real huggingface_hub downloads without a network.

    `requests` logs (method, path) of every request. `chunk_size`/`chunk_delay` slow file bodies down so a test
    can cancel mid-file; `status` makes every request fail with that HTTP status (a Hub that is down);
    `stop()` kills the server (then connections are refused).
    """

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.chunk_size = 1 << 20
        self.chunk_delay = 0.0
        self.status: int | None = None
        self.reject_token = False  # 401 "Invalid credentials" for every request
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: stop() really stops

            def log_message(self, *args):
                pass

            def do_GET(self):
                hub._handle(self, head=False)

            def do_HEAD(self):
                hub._handle(self, head=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()

    # -- set-up -------------------------------------------------------------------------------------------------
    def add(self, repo_id: str, files: dict[str, bytes] | Path, *, revision: str = "main",
            access: str = "public") -> str:
        """Publish files as a new commit of repo_id on branch/tag `revision`; returns the commit sha."""
        files = folder_files(files) if isinstance(files, Path) else dict(files)
        repo = self.repos.setdefault(repo_id, FakeRepo())
        repo.access = access
        sha = commit_sha(files, salt=f"{repo_id}@{revision}#{len(repo.commits)}")
        repo.commits[sha] = files
        repo.refs[revision] = sha
        return sha

    def add_pull_request(self, repo_id: str, files: dict[str, bytes] | Path, *, author: str = "SFconvertbot",
                         status: str = "open") -> int:
        """Open pull request N of repo_id with these files at revision refs/pr/N (the Hub's conversion bot's)."""
        repo = self.repos[repo_id]
        num = len(repo.pull_requests) + 1
        self.add(repo_id, files, revision=f"refs/pr/{num}", access=repo.access)
        repo.pull_requests.append({"num": num, "title": "Adding `safetensors` variant of this model",
                                   "author": {"name": author}, "createdAt": "2026-01-01T00:00:00.000Z",
                                   "status": status, "isPullRequest": True,
                                   "repo": {"name": repo_id, "type": "model"}})
        return num

    def downloads(self) -> list[str]:
        """Paths of the files fetched with GET (file bodies, not metadata)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests if m == "GET"
                and "/resolve/" in p]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- serving ------------------------------------------------------------------------------------------------
    def _commit(self, repo: FakeRepo, rev: str) -> str | None:
        if rev in repo.refs:
            return repo.refs[rev]
        matches = [sha for sha in repo.commits if sha.startswith(rev)] if len(rev) >= 7 else []
        return matches[0] if len(matches) == 1 else None

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append(("HEAD" if head else "GET", path))
        if self.status is not None:
            return self._error(h, self.status, "Internal Error", head=head)
        if self.reject_token:
            return self._error(h, 401, None, message="Invalid credentials in Authorization header", head=head)
        if path.startswith("/api/models/") and path.endswith("/discussions"):
            return self._discussions(h, path[len("/api/models/"):-len("/discussions")], urlsplit(h.path).query)
        if path.startswith("/api/models/"):
            repo_id, _, rev = path[len("/api/models/"):].partition("/revision/")
            return self._model_info(h, repo_id, rev or "main")
        if "/resolve/" in path:
            repo_id, rest = path[1:].split("/resolve/", 1)
            rev, _, filename = rest.partition("/")
            return self._resolve(h, repo_id, rev, filename, head=head)
        return self._error(h, 404, None, head=head)

    def _lookup(self, h, repo_id: str, rev: str, *, head: bool = False, files: bool = False):
        repo = self.repos.get(repo_id)
        if repo is None or repo.access == "private":
            self._error(h, 401 if repo else 404, "RepoNotFound", head=head)
            return None
        if files and repo.access == "gated":
            self._error(h, 403, "GatedRepo", head=head)
            return None
        sha = self._commit(repo, rev)
        if sha is None:
            self._error(h, 404, "RevisionNotFound", head=head)
            return None
        return repo, sha

    def _model_info(self, h, repo_id: str, rev: str) -> None:
        found = self._lookup(h, repo_id, rev)
        if found is None:
            return
        repo, sha = found
        siblings = []
        for name, data in sorted(repo.commits[sha].items()):
            entry = {"rfilename": name, "size": len(data), "blobId": git_blob_sha(data)}
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                           "gated": "manual" if repo.access == "gated" else False, "disabled": False,
                           "tags": [], "siblings": siblings}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _discussions(self, h, repo_id: str, query: str) -> None:
        from urllib.parse import parse_qs

        found = self._lookup(h, repo_id, "main")
        if found is None:
            return
        args = {k: v[0] for k, v in parse_qs(query).items()}
        listed = [d for d in found[0].pull_requests if args.get("status") in (None, "all", d["status"])
                  and args.get("author") in (None, d["author"]["name"])]
        body = json.dumps({"discussions": listed, "count": len(listed), "start": 0,
                           "numClosedDiscussions": 0}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _resolve(self, h, repo_id: str, rev: str, filename: str, *, head: bool) -> None:
        found = self._lookup(h, repo_id, rev, head=head, files=True)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(filename)
        if data is None:
            return self._error(h, 404, "EntryNotFound", head=head, commit=sha)
        start = 0
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", sha)
        h.send_header("ETag", f'"{git_blob_sha(data)}"')
        if filename.endswith(LFS_SUFFIXES):
            h.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        try:
            for i in range(start, len(data), self.chunk_size):
                h.wfile.write(data[i:i + self.chunk_size])
                h.wfile.flush()
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (cancelled)

    def _error(self, h, status: int, code: str | None, *, message: str | None = None, head: bool = False,
               commit: str | None = None) -> None:
        body = json.dumps({"error": message or code or "Not Found"}).encode()
        h.send_response(status)
        if code:
            h.send_header("X-Error-Code", code)
        if message:
            h.send_header("X-Error-Message", message)
        if commit:
            h.send_header("X-Repo-Commit", commit)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)
