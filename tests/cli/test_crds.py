"""`fleetwave crds`: crds/ is generated from the schemas and must never drift from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fleetwave.cli.main import cli
from fleetwave.resources.crds import render_crds

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
FLEETWAVE = Path(sys.executable).parent / "fleetwave"


def test_crds_folder_is_what_fleetwave_crds_writes() -> None:
    rendered = render_crds()
    on_disk = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    stale = sorted(name for name in rendered.keys() | on_disk.keys()
                   if rendered.get(name) != on_disk.get(name))
    assert not stale, (
        f"crds/ is out of date ({', '.join(stale)}): run `fleetwave crds` and commit crds/")


def test_one_file_per_kind() -> None:
    assert sorted(render_crds()) == [
        "deviceinventories.fleetwave.io.yaml",
        "rolloutpolicies.fleetwave.io.yaml",
        "rollouts.fleetwave.io.yaml",
    ]


def test_check_passes_on_the_repository_via_the_console_script() -> None:
    proc = subprocess.run([str(FLEETWAVE), "crds", "--check"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_writes_every_crd_into_the_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = CliRunner().invoke(cli, ["crds", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_text() for p in out.iterdir()} == render_crds()
    again = CliRunner().invoke(cli, ["crds", "--output-dir", str(out), "--check"])
    assert again.exit_code == 0


def test_check_fails_and_says_what_to_run_when_a_file_drifted(tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["crds", "--output-dir", str(tmp_path)])
    (tmp_path / "rollouts.fleetwave.io.yaml").write_text("# edited by hand\n")
    (tmp_path / "deviceinventories.fleetwave.io.yaml").unlink()
    result = CliRunner().invoke(cli, ["crds", "--output-dir", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "rollouts.fleetwave.io.yaml is out of date" in result.stderr
    assert "deviceinventories.fleetwave.io.yaml is missing" in result.stderr
    assert "run `fleetwave crds" in result.stderr
    assert (tmp_path / "rollouts.fleetwave.io.yaml").read_text() == "# edited by hand\n"


def test_stdout_prints_all_crds_as_one_stream() -> None:
    import yaml
    result = CliRunner().invoke(cli, ["crds", "--stdout"])
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["metadata"]["name"] for d in docs] == [
        "rollouts.fleetwave.io", "rolloutpolicies.fleetwave.io",
        "deviceinventories.fleetwave.io"]
