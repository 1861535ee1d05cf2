"""Metadata keys are named once (core/keys.py): no module reads or writes a job's metadata by a literal."""

from __future__ import annotations

import ast
from pathlib import Path

from jobwidget.core import keys

PACKAGE = Path(keys.__file__).resolve().parents[1]
_METADATA_NAMES = {"metadata", "meta"}


def _is_metadata(node: ast.expr) -> bool:
    """`metadata`, `meta`, `job.metadata`, `self.job.metadata`..."""
    if isinstance(node, ast.Name):
        return node.id in _METADATA_NAMES
    return isinstance(node, ast.Attribute) and node.attr == "metadata"


def _literal_keys(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and _is_metadata(node.value):
            key = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"get", "pop", "setdefault"}
            and _is_metadata(node.func.value)
            and node.args
        ):
            key = node.args[0]
        elif isinstance(node, ast.keyword) and node.arg == "metadata" and isinstance(node.value, ast.Dict):
            found += [(node.value.lineno, k.value) for k in node.value.keys if isinstance(k, ast.Constant)]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append((node.lineno, key.value))
    return found


def test_no_module_spells_a_metadata_key_as_a_literal():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keys.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{path.relative_to(PACKAGE)}:{line}: {key!r}" for line, key in _literal_keys(tree)]
    assert not offenders, "metadata keys belong in core/keys.py:\n" + "\n".join(offenders)


def test_the_scan_finds_literal_keys():
    """The scan above would see each way of spelling a key in place (so its silence means something)."""
    source = (
        "a = job.metadata.get('x')\n"
        "b = meta['y']\n"
        "meta.pop('z', None)\n"
        "job.evolve(metadata={'w': 1, KEY: 2})\n"
        "c = job.metadata.get(KEY)\n"
    )
    assert sorted(_literal_keys(ast.parse(source))) == [(1, "x"), (2, "y"), (3, "z"), (4, "w")]


def test_top_level_keys_are_distinct():
    top = [
        keys.PROVIDER_STATUS,
        keys.UNKNOWN_STATUS,
        keys.PREDICT_TIME,
        keys.TOTAL_TIME,
        keys.SOURCE,
        keys.DESTINATION,
        keys.INPUTS_OMITTED,
        keys.PRICE_PER_S,
        keys.COST_ESTIMATE,
        keys.MISSING,
        keys.POLL_STOPPED,
        keys.INLINE,
        keys.LOG_CHARS,
        keys.SETTLED,
        keys.HEALTH,
        keys.GUARD,
    ]
    assert len(set(top)) == len(top)
    assert set(keys.INLINE_FIELDS) | {keys.INLINE_LOSS_NAN} == {
        keys.INLINE_STEP,
        keys.INLINE_TOTAL_STEPS,
        keys.INLINE_RATE,
        keys.INLINE_ETA_SECONDS,
        keys.INLINE_LOSS,
        keys.INLINE_LOSS_NAN,
    }
