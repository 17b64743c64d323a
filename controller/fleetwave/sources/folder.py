"""A plain local folder of Rollout files: `fleetwave run --source ./rollouts`.

For trying things out and for tests, with the same rules as git (see
`fleetwave.sources.base`). The revision is a digest of every file's path and
content, so an unchanged folder keeps its revision across restarts and an edit
shows up as a new revision in status and metrics. Polling compares file sizes
and mtimes first and only reads the files when those changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from fleetwave.metrics import Metrics
from fleetwave.resources.loading import (
    MAX_FILE_BYTES,
    LoadResult,
    Problem,
    iter_yaml_files,
    load_text,
    too_big,
)
from fleetwave.resources.model import SourceRef
from fleetwave.sources.base import Backoff, Generations, PollingSource, SourceError

"""Larger files are reported, not parsed: a Rollout is a few KiB; this bounds memory."""

_Stamp = tuple[tuple[str, int, int], ...]


class FolderSource(PollingSource):
    """Rollouts, policies and inventories from `*.yaml`/`*.yml` files under one folder."""

    kind = "folder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 2.0,
        backoff: Backoff | None = None,
        metrics: Metrics | None = None,
        generations: Generations | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(str(path), poll_interval=poll_interval, backoff=backoff,
                         metrics=metrics, generations=generations)
        self._stamp: _Stamp | None = None
        self._cache: tuple[str, dict[str, LoadResult]] | None = None

    async def _read(self) -> tuple[str, Mapping[str, LoadResult]]:
        return await asyncio.to_thread(self._read_blocking)

    def _read_blocking(self) -> tuple[str, dict[str, LoadResult]]:
        if not self.path.is_dir():
            raise SourceError(f"folder {self.path} does not exist or is not a folder; "
                              "create it or point --source at your rollouts folder")
        files = list(iter_yaml_files([self.path]))
        stamp = self._stamp_of(files)
        if stamp == self._stamp and self._cache is not None:
            return self._cache
        digest = hashlib.sha256()
        contents: dict[str, bytes | Problem] = {}
        for f in files:
            rel = f.relative_to(self.path).as_posix()
            try:
                size = f.stat().st_size
                if size > MAX_FILE_BYTES:
                    contents[rel] = too_big(rel, size)
                    continue
                raw = f.read_bytes()
            except OSError as exc:
                contents[rel] = Problem(rel, None, None, "", f"cannot read file: {exc.strerror}")
                continue
            contents[rel] = raw
            digest.update(rel.encode() + b"\0" + raw + b"\0")
        revision = digest.hexdigest()[:16]
        ref = SourceRef(kind="folder", revision=revision)
        results: dict[str, LoadResult] = {}
        for rel, data in contents.items():
            if isinstance(data, Problem):
                results[rel] = LoadResult(problems=[data])
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                results[rel] = LoadResult(problems=[Problem(
                    rel, None, None, "", "file is not UTF-8 text; save it as UTF-8")])
                continue
            results[rel] = load_text(text, rel, ref)
        self._stamp = stamp
        self._cache = (revision, results)
        return self._cache

    @staticmethod
    def _stamp_of(files: list[Path]) -> _Stamp:
        out = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime_ns, st.st_size))
        return tuple(out)
