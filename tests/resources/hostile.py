"""Hostile YAML that a source may hold: each must be refused on its own, quickly, located."""

from __future__ import annotations

DEPTH = 50_000


def alias_bomb(levels: int = 9) -> str:
    """"Billion laughs": 9 levels of 9 aliases each expand ~700 bytes into 9**9 strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


RECURSIVE_ALIAS = "apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\nspec: &loop [*loop]\n"
PYTHON_TAG = ("apiVersion: fleetwave.io/v1alpha1\nkind: Rollout\n"
              "metadata: !!python/object/apply:os.system [\"touch /tmp/pwned\"]\n")
CUSTOM_TAG = "apiVersion: fleetwave.io/v1alpha1\nkind: !Rollout Rollout\n"


def deep_list(depth: int = DEPTH) -> str:
    """`[[[[...]]]]`, `depth` levels: past any parser or Python recursion limit."""
    return "[" * depth + "]" * depth + "\n"


def deep_mapping(depth: int = 200) -> str:
    """Block-style nesting, `a:` inside `a:`."""
    return "".join("  " * level + "a:\n" for level in range(depth)) + "  " * depth + "b: 1\n"
