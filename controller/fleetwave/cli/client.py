"""A small synchronous HTTP client for the CLI's read and control commands.

Synchronous urllib on purpose: a command makes one or a few requests, and
importing aiohttp would slow every `fleetwave status`. Its job beyond HTTP is
turning failures into one line that says what to do (start the server, set
FLEETWAVE_SERVER, set FLEETWAVE_TOKEN), with exit code 1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

import click

from fleetwave.cli.output import diagnostic

DEFAULT_SERVER = "http://127.0.0.1:8080"
TIMEOUT = 10.0
"""Seconds per request: a controller that takes longer is as good as unreachable."""
PAGE_LIMIT = 1000
"""Items per page when following a whole list: the server's maximum."""


class ClientError(click.ClickException):
    """A failed request, already phrased for the user; click exits with 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        diagnostic(self.message, "error")


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.server = server.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    def get(self, path: str, params: dict[str, Any] | None = None, *,
            not_found: str | None = None) -> Any:
        return self.request("GET", path, params=params, not_found=not_found)

    def get_all(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every item of a paginated list, following `next` page by page, as one
        `{"items": [...]}` document (what the list endpoints served before paging)."""
        items: list[Any] = []
        query = dict(params or {}, limit=PAGE_LIMIT)
        seen: set[str] = set()
        while True:
            page = self.get(path, query)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ClientError(f"{self.server}{path} did not answer with a list of items")
            items += page["items"]
            cursor = page.get("next")
            if not isinstance(cursor, str) or cursor in seen:
                return {"items": items}
            seen.add(cursor)  # a server that repeats a cursor would loop forever
            query["cursor"] = cursor

    def post(self, path: str, body: dict[str, Any] | None = None, *,
             not_found: str | None = None) -> Any:
        return self.request("POST", path, body=body, not_found=not_found)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None, not_found: str | None = None) -> Any:
        """The decoded JSON answer; ClientError with advice for every failure."""
        url = self.server + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:  # reads need it too where the server has --read-token-file
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, not_found) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise self.unreachable() from exc
        except ValueError as exc:  # a malformed --server
            raise ClientError(f"--server {self.server!r} is not an http(s) URL: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"{self.server} answered with something that is not JSON: is it "
                              "a fleetwave server?") from None

    def unreachable(self) -> ClientError:
        return ClientError(f"cannot reach fleetwave at {self.server}: is `fleetwave run` "
                           "running? set --server or FLEETWAVE_SERVER")

    def _http_error(self, exc: urllib.error.HTTPError, not_found: str | None) -> ClientError:
        message = code = ""
        try:
            payload = json.loads(exc.read())
            message = str(payload["error"]["message"])
            code = str(payload["error"]["code"])
        except (ValueError, KeyError, TypeError, OSError):
            message = exc.reason if isinstance(exc.reason, str) else ""
        if code == "writes_disabled":
            return ClientError(message)  # no token would help: the server says what to do
        if exc.code in (401, 403):
            return ClientError("the server refused the token: set FLEETWAVE_TOKEN to a token "
                               "from the server's --token-file (or --read-token-file for "
                               "reads)")
        if exc.code == 404 and not_found is not None:
            return ClientError(not_found)
        return ClientError(message or f"the server answered HTTP {exc.code}")
