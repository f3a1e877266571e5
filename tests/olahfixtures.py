"""A real Hub server for download tests: olah (a self-hosted Hugging Face mirror) over local git repos, offline.

    huggingface_hub ──HF_ENDPOINT──▶ proxy (a thread, 127.0.0.1) ──▶ olah (subprocess, 127.0.0.1, offline)
                                      │ /api/models/{repo}/revision/{rev}          │ /{repo}/resolve/{rev}/{file}
                                      │ answered from the git repo (file sizes,    │ from mirrors/models/{org}/{name}
                                      ▼ LFS metadata), the rest forwarded           ▼ (git objects + .git/lfs/objects)

olah's own model_info has no file sizes (`files_metadata=True`) and answers an unknown revision as an unknown
repo; the proxy adds what the Hub answers there, forwards everything else byte for byte, logs what it forwarded and
can die at a chosen byte of a file (`kill_at`). `OlahHub.kill()` is a server dying: olah gets SIGKILL and
the proxy drops its connections; `start()` brings both back on the same ports.

`git_repo` writes a model as a Hub-style git repo: weights as git-LFS pointers with the objects under
`.git/lfs/objects` (what olah reads; git-lfs itself is not needed), one commit per file set, extra refs.

olah 0.5.4 is not installed into the project's venv (its fastapi-utils pins psutil<6, which would downgrade
the app's psutil): `olah_python()` uses an interpreter that has it, else a venv of its own created once under
`$XDG_CACHE_HOME/pocket-nlp/` (or `$POCKET_NLP_OLAH_VENV`) with pip; tests skip, saying why, when neither works.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

OLAH_VERSION = "0.5.4"
OLAH = f"olah=={OLAH_VERSION}"
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".onnx")
_GIT_ENV = {"GIT_AUTHOR_NAME": "tests", "GIT_AUTHOR_EMAIL": "tests@localhost", "GIT_COMMITTER_NAME": "tests",
            "GIT_COMMITTER_EMAIL": "tests@localhost", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


class Unavailable(RuntimeError):
    """olah cannot be run here; the message says why (tests skip with it)."""


# ---------------------------------------------------------------------------------------------------------------
# olah itself

def _has_olah(python: Path | str) -> bool:
    code = f"import importlib.metadata as m; assert m.version('olah') == {OLAH_VERSION!r}"  # start() finds the rest
    return subprocess.run([str(python), "-c", code], capture_output=True, check=False, timeout=120).returncode == 0


def olah_python() -> Path:
    """An interpreter that can run olah 0.5.4, creating its venv once if needed; raises Unavailable."""
    if _has_olah(sys.executable):
        return Path(sys.executable)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pocket-nlp"
    venv = Path(os.environ.get("POCKET_NLP_OLAH_VENV") or cache / f"test-olah-{OLAH_VERSION}")
    python = venv / "bin" / "python"
    if python.exists() and _has_olah(python):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be creating it
        if python.exists() and _has_olah(python):
            return python
        tmp = venv.with_name(venv.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=120)
            subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--timeout", "15", "--retries", "1", OLAH], check=True, capture_output=True, text=True,
                           timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            said = (getattr(e, "stderr", None) or str(e) or "").strip().splitlines()
            raise Unavailable(f"{OLAH} is not installed and installing it into {venv} failed: "
                              f"{said[-1] if said else type(e).__name__}") from e
        shutil.rmtree(venv, ignore_errors=True)
        os.replace(tmp, venv)  # complete or absent; olah is run as `python -m`, so the scripts' old paths do not matter
    if not _has_olah(python):
        raise Unavailable(f"{OLAH} was installed into {venv} but does not import")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Git repos in the Hub's layout

def _git(repo: Path, *args: str, data: bytes | None = None) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, check=True,
                         env={**os.environ, **_GIT_ENV})
    return out.stdout.decode()


def lfs_pointer(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def git_repo(mirrors: Path, repo_id: str, commits: list[dict[str, bytes]], *,
             refs: dict[str, int] | None = None) -> list[str]:
    """Write `repo_id` under mirrors/models/ with one commit per file set (each replaces the whole tree) on main;
    `refs` = {"v1": 0, "refs/pr/1": 1}: branch or full ref name → commit index. Returns the commit shas."""
    repo = Path(mirrors) / "models" / repo_id
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    shas = []
    for files in commits:
        for old in _git(repo, "ls-files", "-z").split("\0"):
            if old:
                (repo / old).unlink()
        for name, data in files.items():
            path = repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(LFS_SUFFIXES):
                oid = hashlib.sha256(data).hexdigest()
                obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)
                data = lfs_pointer(data)
            path.write_bytes(data)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"commit {len(shas)}")
        shas.append(_git(repo, "rev-parse", "HEAD").strip())
    for name, index in (refs or {}).items():
        _git(repo, "update-ref", name if name.startswith("refs/") else f"refs/heads/{name}", shas[index])
    return shas


def _model_info(repo: Path, repo_id: str, rev: str) -> dict | None:
    """What the Hub answers for /api/models/{repo}/revision/{rev}?blobs=True, from the git repo; None: no rev."""
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        return None
    siblings = []
    for line in _git(repo, "ls-tree", "-r", "-l", sha).splitlines():
        meta, name = line.split("\t", 1)
        _mode, _kind, blob, size = meta.split()
        entry = {"rfilename": name, "size": int(size), "blobId": blob}
        if 120 < int(size) < 200:
            text = _git(repo, "cat-file", "-p", blob)
            if text.startswith("version https://git-lfs"):
                fields = dict(row.split(" ", 1) for row in text.splitlines())
                lfs_size = int(fields["size"])
                entry.update(size=lfs_size, lfs={"size": lfs_size, "sha256": fields["oid"].split(":", 1)[1],
                                                 "pointerSize": int(size)})
        siblings.append(entry)
    return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "gated": False, "disabled": False,
            "tags": [], "siblings": siblings}


# ---------------------------------------------------------------------------------------------------------------
# The server: olah behind a small proxy

class OlahHub:
    """olah serving `mirrors` offline, behind the proxy of `_proxy_server`; `url` is what HF_ENDPOINT points at."""

    def __init__(self, root: Path, python: Path):
        self.root, self.python = Path(root), python
        self.mirrors = self.root / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        self.olah_port, self.port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.shas: dict[str, list[str]] = {}  # repo id → commit shas, oldest first
        self.commits: dict[str, list[dict[str, bytes]]] = {}  # repo id → the files of each commit
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) the proxy answered
        self.sent: dict[str, int] = {}  # path → body bytes forwarded (GET file bodies)
        self.chunk_size = 1 << 16  # bytes forwarded at a time (and the granularity of kill_at)
        self.chunked = True  # False: forward bodies close-delimited, as an HTTP/1.0 proxy in between would
        self.kill_at: tuple[str, int] | None = None  # (file name, bytes): die once that much of it was forwarded
        self.killed = threading.Event()  # set by kill(), cleared by start()
        self._olah: subprocess.Popen | None = None
        self._proxy: ThreadingHTTPServer | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.olah_port}\n'
            f'repos-path = "{self.root / "olah-cache"}"\nmirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n", encoding="utf-8")
        self._config = config
        atexit.register(self.kill)  # never leave olah running, whatever happens to the test process

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        self.killed.clear()
        with open(self.root / "olah.out", "ab") as log:
            self._olah = subprocess.Popen([str(self.python), "-m", "olah.server", "-c", str(self._config),
                                           "--log-path", str(self.root / "logs")], cwd=self.root, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:  # olah answers once uvicorn listens
            if self._olah.poll() is not None:
                raise Unavailable(f"olah exited with code {self._olah.returncode}: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.olah_port, timeout=2)
                conn.request("GET", "/api/whoami-v2")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise Unavailable(f"olah did not answer within {timeout:.0f} s: {self.log_tail()}") from None
                time.sleep(0.05)
        self._proxy = _proxy_server(self)
        threading.Thread(target=self._proxy.serve_forever, kwargs={"poll_interval": 0.05}, name="olah-proxy",
                         daemon=True).start()

    @property
    def running(self) -> bool:
        return self._proxy is not None

    def kill(self) -> None:
        """The server dies: olah is SIGKILLed, the proxy stops listening and drops every connection at once."""
        if self._olah is not None and self._olah.poll() is None:
            os.killpg(self._olah.pid, signal.SIGKILL)
            self._olah.wait(timeout=10)
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()
        self.killed.set()

    def log_tail(self, lines: int = 5) -> str:
        path = self.root / "olah.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    # -- repos and observation ----------------------------------------------------------------------------------
    def add(self, repo_id: str, commits: list[dict[str, bytes]], *, refs: dict[str, int] | None = None) -> list[str]:
        self.shas[repo_id] = git_repo(self.mirrors, repo_id, commits, refs=refs)
        self.commits[repo_id] = commits
        return self.shas[repo_id]

    def move_ref(self, repo_id: str, ref: str, index: int) -> None:
        """Point branch `ref` of repo_id at its commit number `index` (a push, as the server sees it)."""
        _git(self.repo_path(repo_id), "update-ref", f"refs/heads/{ref}", self.shas[repo_id][index])

    def repo_path(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def downloads(self) -> list[str]:
        """Files whose bodies were fetched (GET .../resolve/{rev}/{file} answered 200 or 206)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p, s in self.requests
                if m == "GET" and "/resolve/" in p and s in (200, 206)]


def _proxy_server(hub: OlahHub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: kill() really cuts every transfer

        def setup(self):
            super().setup()
            with hub._lock:
                hub._open.add(self.connection)

        def finish(self):
            with hub._lock:
                hub._open.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, *args):
            pass

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            self._serve("POST")

        def _serve(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            if method != "POST" and path.startswith("/api/models/") and "/revision/" in path:
                repo_id, _, rev = path[len("/api/models/"):].partition("/revision/")
                return self._model_info(method, path, repo_id, rev)
            self._forward(method, path)

        def _answer(self, method: str, path: str, status: int, body: bytes, headers: dict[str, str]) -> None:
            hub.requests.append((method, path, status))
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body)),
                         "Connection": "close"}.items():
                self.send_header(k, v)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _model_info(self, method: str, path: str, repo_id: str, rev: str) -> None:
            repo = hub.repo_path(repo_id)
            if not (repo / ".git").is_dir():
                return self._answer(method, path, 401, b'{"error":"Repository not found"}',
                                    {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            info = _model_info(repo, repo_id, rev)
            if info is None:
                message = f"Invalid rev id: {rev}"
                return self._answer(method, path, 404, json.dumps({"error": message}).encode(),
                                    {"X-Error-Code": "RevisionNotFound", "X-Error-Message": message})
            self._answer(method, path, 200, json.dumps(info).encode(), {})

        def _forward(self, method: str, path: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream = http.client.HTTPConnection("127.0.0.1", hub.olah_port, timeout=30)
            try:
                upstream.request(method, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
            except OSError:
                upstream.close()
                self.close_connection = True
                return  # olah is gone: the client sees the connection close, as with a dead server
            hub.requests.append((method, path, resp.status))
            # olah streams file bodies chunked, without Content-Length; keep that framing (an HTTP/1.0 close-
            # delimited body would make a cut connection look like a complete, short file) unless told not to.
            chunked = hub.chunked and method != "HEAD" and resp.getheader("Content-Length") is None
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "server", "date"):
                    self.send_header(k, v)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while method != "HEAD":
                    chunk = resp.read(hub.chunk_size)
                    if not chunk:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    self.wfile.flush()
                    hub.sent[path] = hub.sent.get(path, 0) + len(chunk)
                    if hub.kill_at and path.endswith("/" + hub.kill_at[0]) and hub.sent[path] >= hub.kill_at[1]:
                        hub.kill_at = None
                        hub.kill()  # mid-file, at a chosen byte: nothing more of it reaches the client
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except (OSError, http.client.HTTPException):
                pass  # the client went away, or olah died mid-body: the connection closes unfinished
            finally:
                upstream.close()

    server = ThreadingHTTPServer(("127.0.0.1", hub.port), Handler)
    server.daemon_threads = True
    return server


# ---------------------------------------------------------------------------------------------------------------
# The repos the tests download, and the fixture

REPO = "acme/tiny-bert"  # main: 2 commits (the 2nd edits config.json); v1 and refs/pr/1 at the 1st; README, a pickle
SHARDED = "acme/tiny-bert-sharded"  # the same weights in two real safetensors shards + model.safetensors.index.json


def shard(files: dict[str, bytes]) -> dict[str, bytes]:
    """The model with model.safetensors split into two shards and an index, as `save_pretrained` shards it."""
    from safetensors.numpy import load, save

    tensors = load(files["model.safetensors"])
    names = sorted(tensors)
    parts = {f"model-0000{i + 1}-of-00002.safetensors": names[i::2] for i in range(2)}
    out = {k: v for k, v in files.items() if k != "model.safetensors"}
    for shard_name, keys in parts.items():
        out[shard_name] = save({k: tensors[k] for k in keys}, metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {k: s for s, keys in parts.items() for k in keys}}
    out["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return out


def make_olah_hub(root: Path, model: Path) -> OlahHub:
    """olah started over REPO and SHARDED, built from a tiny model folder; skips the test when it cannot run."""
    import pytest

    from hubfixtures import folder_files

    if shutil.which("git") is None:
        pytest.skip("git is not installed (olah serves git repositories)")
    try:
        python = olah_python()
    except Unavailable as e:
        pytest.skip(str(e))
    files = folder_files(model)
    config = json.loads(files["config.json"])
    edited = files | {"config.json": json.dumps({**config, "pocket_revision": 2}, indent=2).encode()}
    extras = {"README.md": b"---\nlicense: apache-2.0\n---\n# tiny\n", "pytorch_model.bin": b"pickle" * 500}
    hub = OlahHub(root, python)
    hub.add(REPO, [files | extras, edited | extras], refs={"v1": 0, "refs/pr/1": 0})
    hub.add(SHARDED, [shard(files)])
    try:
        hub.start()
    except Unavailable as e:
        hub.kill()
        pytest.skip(str(e))
    return hub
