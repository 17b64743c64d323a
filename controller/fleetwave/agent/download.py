"""Fetch an artifact into `stateDir`, resumably, within a size bound, verifying SHA-256.

Devices sit behind slow and flaky links: a download that breaks off resumes with an HTTP
Range request from the bytes already on disk (also after an agent restart), each read has
a timeout, and the size is bounded before and while reading so a wrong URL cannot fill the
disk. The SHA-256 is taken over the finished file as it lies on disk (what the installer
will read, resumed prefix included); only a file whose hash matches is ever handed on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fleetwave.agent.failures import Reason, UpdateFailure

log = logging.getLogger(__name__)

CHUNK: Final = 64 * 1024
ATTEMPTS: Final = 4
"""Tries per download; each resumes where the last one broke off."""

Progress = Callable[[int, int | None], None]
"""(bytes so far, total or None)."""


def fetch(url: str, sha256: str, directory: Path, *, max_bytes: int, timeout: float,
          progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
          attempts: int = ATTEMPTS) -> Path:
    """The verified file `directory/<sha256>`; raises `UpdateFailure` with the reason."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256.lower()):
        raise UpdateFailure(Reason.CHECKSUM, f"artifact sha256 {sha256[:80]!r} is not 64 hex")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UpdateFailure(Reason.DOWNLOAD, "artifact url must be http:// or https://")
    sha256 = sha256.lower()
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / sha256
    if done.exists() and _hash_file(done) == sha256:
        return done  # verified before a restart
    part = directory / f"{sha256}.part"
    last: Exception | None = None
    for attempt in range(attempts):
        if cancelled is not None and cancelled():
            raise UpdateFailure(Reason.CANCELLED, "cancelled during download")
        try:
            _transfer(url, part, max_bytes=max_bytes, timeout=timeout, progress=progress)
            break
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError, _Incomplete) as exc:
            last = exc
            log.warning("download broke off (attempt %d of %d): %s; resuming from %d bytes",
                        attempt + 1, attempts, exc, _size(part))
            time.sleep(min(0.5 * 2 ** attempt, 5.0))
    else:
        raise UpdateFailure(Reason.DOWNLOAD, f"download of {url} failed after {attempts} "
                            f"attempts: {last}")
    actual = _hash_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise UpdateFailure(Reason.CHECKSUM, f"artifact sha256 is {actual}, the command "
                            f"names {sha256}")
    os.replace(part, done)
    return done


class _Incomplete(Exception):
    """The server closed the connection before the promised length: resume."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _transfer(url: str, part: Path, *, max_bytes: int, timeout: float,
              progress: Progress | None) -> None:
    offset = _size(part)
    if offset > max_bytes:
        part.unlink()
        offset = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # the part is already whole; the hash decides
        if 400 <= exc.code < 500:
            raise UpdateFailure(Reason.DOWNLOAD, f"server answered {exc.code} for {url}") \
                from exc
        raise
    with response:
        resumed = response.status == 206
        if not resumed:
            offset = 0  # the server ignored Range: start again
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        if total is not None and total > max_bytes:
            raise UpdateFailure(Reason.TOO_LARGE, f"artifact is {total} bytes, more than "
                                f"maxArtifactBytes {max_bytes}")
        _stream(response, part, offset, resumed, max_bytes=max_bytes, total=total,
                progress=progress)


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, resumed: bool, *,
            max_bytes: int, total: int | None, progress: Progress | None) -> None:
    received = offset
    try:
        with part.open("ab" if resumed else "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)
                    raise _Incomplete(f"connection closed after {received} bytes") from exc
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise UpdateFailure(Reason.TOO_LARGE, f"artifact exceeds maxArtifactBytes "
                                        f"{max_bytes}")
                out.write(chunk)
                if progress is not None:
                    progress(received, total)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            with contextlib.suppress(OSError):
                part.unlink()
            raise UpdateFailure(Reason.DISK_FULL, f"no space left for the artifact in "
                                f"{part.parent}") from exc
        raise
    if total is not None and received < total:
        raise _Incomplete(f"got {received} of {total} bytes")


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
