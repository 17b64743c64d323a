"""A small asyncio Kubernetes client for the few calls kopf does not make for us.

kopf watches our resources and calls our handlers, but status patches from the
engine's loop, aggregated Events and the leader Lease are requests we make
ourselves, at times kopf does not choose. The official `kubernetes` client is
synchronous (it would block the loop that also runs MQTT and the API), so this
is a thin aiohttp layer on the same credentials kopf logs in with
(`kopf.ConnectionInfo`). Errors come back typed by status code, because the
callers branch on them: 404 (gone), 409 (someone else changed it first).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kopf

JSON = dict[str, Any]
Credentials = Callable[[], Awaitable[kopf.ConnectionInfo]]

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer of the API server; `status` is the HTTP code, `reason` its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    """404: the object (or its namespace, or the resource) does not exist."""


class ConflictError(ApiError):
    """409: a resourceVersion precondition failed, or the object already exists."""


def _error(status: int, body: str) -> ApiError:
    reason, message = "", body[:500]
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        reason = str(doc.get("reason") or "")
        message = str(doc.get("message") or message)
    if status == 404:
        return NotFoundError(status, reason or "NotFound", message)
    if status == 409:
        return ConflictError(status, reason or "Conflict", message)
    return ApiError(status, reason or "Error", message)


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    context = ssl.create_default_context()
    if info.ca_path:
        context.load_verify_locations(cafile=str(info.ca_path))
    elif info.ca_data:
        data = info.ca_data if isinstance(info.ca_data, str) else info.ca_data.decode()
        if "BEGIN CERTIFICATE" not in data:
            data = base64.b64decode(data).decode()
        context.load_verify_locations(cadata=data)
    cert = _as_file(info.certificate_path, info.certificate_data)
    key = _as_file(info.private_key_path, info.private_key_data)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _as_file(path: Any, data: str | bytes | None) -> str | None:
    """ssl wants client certificates as files; kubeconfigs often carry them inline."""
    if path:
        return str(path)
    if not data:
        return None
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        raw = base64.b64decode(raw)
    handle = tempfile.NamedTemporaryFile(prefix="fleetwave-", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(raw)
    Path(handle.name).chmod(0o600)
    return handle.name


class KubeClient:
    """JSON requests to one API server; the session is opened lazily and re-logged on 401."""

    def __init__(self, credentials: Credentials, *, timeout: float = 10.0) -> None:
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None

    async def _open(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._session is None or self._info is None:
            info = await self._credentials()
            headers: dict[str, str] = {"Accept": "application/json"}
            if info.token:
                headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
            auth = None
            if info.username and info.password:
                auth = aiohttp.BasicAuth(info.username, info.password)
            connector = aiohttp.TCPConnector(ssl=_ssl_context(info))
            self._session = aiohttp.ClientSession(headers=headers, auth=auth,
                                                  connector=connector, timeout=self._timeout)
            self._info = info
        return self._session, self._info

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._info = None

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                      content_type: str = "application/json") -> JSON:
        for attempt in (1, 2):
            session, info = await self._open()
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": content_type} if data is not None else {}
            try:
                async with session.request(method, info.server.rstrip("/") + path, data=data,
                                           headers=headers) as response:
                    text = await response.text()
                    status = response.status
            except aiohttp.ClientError as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
            if status == 401 and attempt == 1:
                await self.close()  # the token may have been rotated: log in again
                continue
            if status >= 400:
                raise _error(status, text)
            parsed = json.loads(text) if text else {}
            return parsed if isinstance(parsed, dict) else {}
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, path: str) -> JSON:
        return await self.request("GET", path)

    async def create(self, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JSON:
        """A JSON merge patch; a `metadata.resourceVersion` in it is a precondition (409)."""
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH)


def object_path(group_version: str, plural: str, namespace: str | None, name: str | None = None,
                subresource: str | None = None) -> str:
    """`/apis/fleetwave.io/v1alpha1/namespaces/ns/rollouts/name/status` and the like."""
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path
