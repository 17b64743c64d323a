"""Where the deployment tools are, and how the tests run them.

helm, kubectl and promtool are real binaries that `scripts/test` installs into `.tools/bin`
(scripts/lib/tools.sh). A test that needs one and cannot find it fails, saying so:
a skipped chart or alert test would hide a broken chart.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
TIMEOUT_S = 120
"""One helm or promtool call takes well under a second; this only bounds a hang."""


def find_tool(name: str) -> Path:
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.fail(f"{name} not found in {TOOLS_BIN} or on PATH: run ./scripts/test, which installs "
                f"it (scripts/lib/tools.sh: fw_install_{name})", pytrace=False)


def run_tool(argv: list[str | Path], *, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env, cwd=cwd, check=False)
