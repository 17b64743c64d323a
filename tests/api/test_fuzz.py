"""schemathesis fuzzes every operation of our OpenAPI document against a live server.

Whatever it sends — valid, invalid, odd encodings, with and without the token —
the server must answer without a 5xx: user input is never a server error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from fleetwave.api.auth import TokenSet
from fleetwave.api.server import build_app, serve
from fleetwave.api.webhooks import WebhookSecrets
from fleetwave.metrics import build_metrics
from tests.api.conftest import TOKEN
from tests.api.fake_control import FakeControl

ST = Path(sys.executable).with_name("st")


async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    app = build_app(FakeControl(), build_metrics(), TokenSet.from_tokens([TOKEN]),
                    webhook_secrets=WebhookSecrets.of(b"webhook-secret"),
                    max_body=64 * 1024)
    runner = await serve(app, "127.0.0.1:0")
    try:
        host, port = runner.addresses[0][:2]
        proc = await asyncio.create_subprocess_exec(
            str(ST), "run", f"http://{host}:{port}/api/v1/openapi.json",
            "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1",
            "--max-time", "30", "--generation-database", "none", "--request-timeout", "5",
            "--phases", "examples,coverage,fuzzing", "--no-color",
            "-H", f"Authorization: Bearer {TOKEN}",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        try:
            async with asyncio.timeout(90):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await runner.cleanup()
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "operations" in report.lower() or "passed" in report.lower(), report
