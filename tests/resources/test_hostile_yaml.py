"""Hostile YAML is refused with a located reason, in bounded time, and never expanded."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

from fleetwave.resources.loading import (
    MAX_DEPTH,
    MAX_DOCUMENTS,
    MAX_FILE_BYTES,
    load_paths,
    load_text,
)
from tests.resources.hostile import (
    CUSTOM_TAG,
    PYTHON_TAG,
    RECURSIVE_ALIAS,
    alias_bomb,
    deep_list,
    deep_mapping,
)


@pytest.mark.parametrize(("text", "line", "column", "reason"), [
    pytest.param(alias_bomb(), 1, 5, "anchor &a0 is not allowed", id="billion-laughs"),
    pytest.param(RECURSIVE_ALIAS, 3, 7, "anchor &loop is not allowed", id="recursive-alias"),
    pytest.param("a: [1]\nb: *x\n", 2, 4, "alias *x is not allowed", id="alias-alone"),
    pytest.param(PYTHON_TAG, 3, 11, "tag !!python/object/apply:os.system is not allowed",
                 id="python-tag"),
    pytest.param(CUSTOM_TAG, 2, 7, "tag !Rollout is not allowed", id="custom-tag"),
    pytest.param(deep_list(), 1, MAX_DEPTH + 1, f"nesting deeper than {MAX_DEPTH}",
                 id="deep-flow-list"),
    pytest.param(deep_mapping(), MAX_DEPTH + 1, 2 * MAX_DEPTH + 1,
                 f"nesting deeper than {MAX_DEPTH}", id="deep-block-mapping"),
])
def test_refused_with_a_located_reason(text: str, line: int, column: int, reason: str) -> None:
    [problem] = load_text(text, "hostile.yaml").problems
    assert (problem.file, problem.line, problem.column) == ("hostile.yaml", line, column)
    assert problem.severity == "error"
    assert reason in problem.message
    assert problem.message.startswith("refused YAML: ")


def test_a_deep_list_never_reaches_python_recursion() -> None:
    """Even with a stack limit far below the nesting, the refusal comes from the depth cap."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        [problem] = load_text(deep_list(), "deep.yaml").problems
    finally:
        sys.setrecursionlimit(limit)
    assert f"nesting deeper than {MAX_DEPTH}" in problem.message


def test_the_bomb_is_not_expanded_in_memory() -> None:
    """9**9 strings would be gigabytes; refusing at the first anchor allocates nothing much."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert not load_text(alias_bomb(12), "bomb.yaml").ok
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024


def test_nesting_up_to_the_cap_and_standard_tags_still_load() -> None:
    text = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec: {component: !!str agent, version: !!str 1.0, selector: {}}\n"
            "---\nnotOurs: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    result = load_text(text, "ok.yaml")
    assert result.problems == []
    assert result.skipped == ["ok.yaml:6"]
    [doc] = result.documents
    assert doc.document["spec"]["version"] == "1.0"


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    [problem] = load_paths([tmp_path], display_root=tmp_path).problems
    assert problem.file == "big.yaml"
    assert f"over the limit of {MAX_FILE_BYTES}" in problem.message
    [problem] = load_text(big.read_text(), "big.yaml").problems
    assert "over the limit" in problem.message


def test_one_hostile_file_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "a-bomb.yaml").write_text(alias_bomb())
    (tmp_path / "b-deep.yaml").write_text(deep_list())
    (tmp_path / "c-good.yaml").write_text(
        "apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nmetadata: {name: good}\n"
        "spec: {component: agent, version: '1.0.6', selector: {}}\n")
    result = load_paths([tmp_path], display_root=tmp_path)
    assert sorted(p.file for p in result.errors) == ["a-bomb.yaml", "b-deep.yaml"]
    assert [d.resource.name for d in result.documents] == ["good"]


def test_documents_past_the_cap_are_not_read() -> None:
    """140,000 empty documents fit in 1 MiB; reading them all took 13 s."""
    result = load_text("---\n{}\n" * 140_000, "many.yaml")
    [problem] = result.problems
    assert f"more than {MAX_DOCUMENTS} documents in one file" in problem.message
    assert problem.line == 2 * MAX_DOCUMENTS + 2
    assert len(result.skipped) == MAX_DOCUMENTS
