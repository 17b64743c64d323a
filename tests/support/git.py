"""Real git servers for the source tests: a bare repository served by `git daemon` (git://)
and by git's smart HTTP (`git http-backend` behind a small local HTTP server).

Each test gets its own repository under its tmp_path; servers listen on free
ports on 127.0.0.1 and are stopped at teardown. `GitDaemon.stop()`/`start()`
reuse the port, so a test can make the remote unreachable and bring it back.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

AUTHOR = ("Test Author", "author@example.com")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": AUTHOR[0], "GIT_AUTHOR_EMAIL": AUTHOR[1],
        "GIT_COMMITTER_NAME": AUTHOR[0], "GIT_COMMITTER_EMAIL": AUTHOR[1],
        "GIT_TERMINAL_PROMPT": "0",
    })
    return env


class BareRepo:
    """A bare repository the servers export, with a work tree to make commits from."""

    def __init__(self, root: Path, name: str = "fleet.git") -> None:
        self.root = root
        self.name = name
        self.path = root / "served" / name
        self.work = root / "work"
        self.env = _git_env(root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "--bare", "-b", "main", str(self.path))
        self.git("config", "http.receivepack", "true", cwd=self.path)
        self.git("clone", "-q", str(self.path), str(self.work))
        self.git("checkout", "-q", "-b", "main", cwd=self.work)

    def git(self, *args: str, cwd: Path | None = None) -> str:
        out = subprocess.run(["git", *args], cwd=cwd or self.root, env=self.env,
                             capture_output=True, text=True, timeout=30, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    @property
    def file_url(self) -> str:
        return self.path.as_uri()

    def commit(self, files: Mapping[str, str | None], message: str = "change",
               branch: str = "main") -> str:
        """Write (or, for None, delete) files on `branch`, commit, push; return the commit id."""
        self.git("fetch", "-q", "origin", cwd=self.work)
        remote = self.git("branch", "-r", "--list", f"origin/{branch}", cwd=self.work).strip()
        if remote:
            self.git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=self.work)
        else:
            self.git("checkout", "-q", "-B", branch, cwd=self.work)
        for rel, text in files.items():
            target = self.work / rel
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        self.git("add", "-A", cwd=self.work)
        self.git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        self.git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return self.head(branch)

    def head(self, branch: str = "main") -> str:
        return self.git("rev-parse", f"refs/heads/{branch}", cwd=self.path).strip()

    def show(self, revision: str, fmt: str) -> str:
        return self.git("log", "-1", f"--format={fmt}", revision, cwd=self.path).strip()

    def read(self, path: str, branch: str = "main") -> str:
        return self.git("show", f"{branch}:{path}", cwd=self.path)


def _wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} in {timeout}s")


class GitDaemon:
    """`git daemon` exporting the served folder on a fixed port (push enabled)."""

    def __init__(self, repo: BareRepo) -> None:
        self.repo = repo
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/{self.repo.name}"

    def start(self) -> None:
        served = str(self.repo.path.parent)
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
             "--informative-errors", f"--base-path={served}", "--listen=127.0.0.1",
             f"--port={self.port}", served],
            env=self.repo.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
        _wait_port(self.port, up=False)


class _HttpBackend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _SmartHttpServer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        self.server.seen_users.append(user)
        return password == token

    def _serve(self) -> None:
        body = self._read_body()
        if not self._authorised():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        parts = urlsplit(self.path)
        env = dict(self.server.env)
        env.update({
            "GIT_PROJECT_ROOT": self.server.project_root, "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command, "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1",
        })
        for name, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                          ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
            if self.headers.get(name):
                env[var] = self.headers[name]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, timeout=30, check=False)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _SmartHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    token: str | None
    project_root: str
    env: dict[str, str]
    seen_users: list[str]


class GitHttp:
    """git smart HTTP on 127.0.0.1; with `token` set it demands basic auth with that password."""

    def __init__(self, repo: BareRepo, token: str | None = None) -> None:
        self.repo = repo
        self.token = token
        self.port = free_port()
        self.server: _SmartHttpServer | None = None
        self.thread: threading.Thread | None = None

    def url(self, userinfo: str | None = None) -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"http://{auth}127.0.0.1:{self.port}/{self.repo.name}"

    @property
    def seen_users(self) -> list[str]:
        return self.server.seen_users if self.server else []

    def start(self) -> None:
        server = _SmartHttpServer(("127.0.0.1", self.port), _HttpBackend)
        server.token = self.token
        server.project_root = str(self.repo.path.parent)
        server.env = self.repo.env
        server.seen_users = []
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None


@pytest.fixture
def git_repo(tmp_path: Path) -> BareRepo:
    """An empty bare repository with branch main, and a work tree to commit from."""
    return BareRepo(tmp_path / "git")


@pytest.fixture
def git_daemon(git_repo: BareRepo) -> Iterator[GitDaemon]:
    daemon = GitDaemon(git_repo)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def git_http(git_repo: BareRepo) -> Iterator[GitHttp]:
    server = GitHttp(git_repo)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def git_http_token(git_repo: BareRepo) -> Iterator[GitHttp]:
    """Smart HTTP that demands the password `s3cr3t-token-value` (any user name)."""
    server = GitHttp(git_repo, token="s3cr3t-token-value")
    server.start()
    try:
        yield server
    finally:
        server.stop()
