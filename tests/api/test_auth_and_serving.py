"""Token files, writes without a token file, serving on a real port, and the access log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from fleetwave.api.auth import TokenFileError, TokenSet
from fleetwave.api.server import ListenError, build_app, parse_listen, serve
from fleetwave.metrics import build_metrics
from tests.api.conftest import AUTH, TOKEN
from tests.api.fake_control import FakeControl


def test_token_file_skips_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# ops team\n\n  first  \nsecond\n")
    tokens = TokenSet.from_file(path)
    assert tokens.match("first") == 1
    assert tokens.match("second") == 2
    assert tokens.match("# ops team") is None
    assert tokens.match("firs") is None
    assert "first" not in repr(tokens)


@pytest.mark.parametrize(("content", "message"), [
    pytest.param("# only a comment\n\n", "holds no token", id="empty"),
    pytest.param(None, "cannot read token file", id="missing"),
])
def test_unusable_token_file_says_why(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenFileError, match=message):
        TokenSet.from_file(path)


async def test_without_token_file_writes_are_refused_with_advice() -> None:
    control = FakeControl()
    app = build_app(control, build_metrics(), TokenSet.disabled())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post("/api/v1/rollouts/agent-1-0-6/pause", headers=AUTH)
        body = await resp.json()
        assert resp.status == 403
        assert "--token-file" in body["error"]["message"]
        assert (await client.get("/api/v1/rollouts")).status == 200
        body = b'{"ref": "main"}'
        resp = await client.post("/api/v1/webhooks/git", data=body)
        assert resp.status == 401
        assert "no secret configured" in (await resp.json())["error"]["message"]
    assert control.calls == []


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:9000", ("::1", 9000)),
    (":8080", ("0.0.0.0", 8080)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:http", "127.0.0.1:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ListenError, match="--listen"):
        parse_listen(listen)


async def test_serve_on_a_free_port_and_log_without_tokens() -> None:
    app = build_app(FakeControl(), build_metrics(), TokenSet.from_tokens([TOKEN]))
    with structlog.testing.capture_logs() as logs:
        runner = await serve(app, "127.0.0.1:0")
        try:
            host, port = runner.addresses[0][:2]
            async with aiohttp.ClientSession() as session:
                url = f"http://{host}:{port}/api/v1/rollouts/agent-1-0-6/pause"
                async with asyncio.timeout(10), session.post(url, headers=AUTH) as resp:
                    assert resp.status == 200
        finally:
            await runner.cleanup()
    access = [entry for entry in logs if entry["event"] == "http_request"]
    assert access[0]["method"] == "POST"
    assert access[0]["status"] == 200
    assert access[0]["path"] == "/api/v1/rollouts/agent-1-0-6/pause"
    assert TOKEN not in repr(logs)
