"""A training's huge `logs` string decoded in slices gives exactly what `json.loads` gives."""

from __future__ import annotations

import json
import random

import pytest

from jobwidget.engine.providers.json_big import loads_training

# Pieces that make slicing hard: quotes and backslashes (escapes), multi-byte UTF-8, an astral character
# (a surrogate pair once escaped), a lone surrogate, control characters, and the key's own text.
PIECES = ["a", '"', "\\", "\n", "\t", "é", "€", "😀", "\ud800", "xxxxx", "\u0001", "/", "\\u", '"logs": "']


def _body(rng: random.Random) -> bytes:
    log = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 300)))
    shape = rng.randrange(3)
    if shape == 0:
        obj: dict[str, object] = {"id": "abc", "logs": log, "status": "processing", "x": {"logs": "inner"}}
    elif shape == 1:
        obj = {"logs": log, "id": "abc"}
    else:
        obj = {"id": "abc", "note": 'say "logs": "x"', "logs": log}
    ascii_only = rng.random() < 0.5 or "\ud800" in log  # a lone surrogate cannot be written as UTF-8
    return json.dumps(obj, ensure_ascii=ascii_only, indent=rng.choice([None, 1])).encode()


@pytest.mark.parametrize("slice_bytes", [32, 33, 40, 64])
def test_sliced_decoding_equals_json_loads(slice_bytes: int) -> None:
    rng = random.Random(slice_bytes)
    for _ in range(1500):
        body = _body(rng)
        assert loads_training(body, slice_bytes=slice_bytes) == json.loads(body), body[:200]


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "a"}',
        b'{"results": [{"logs": "x"}]}',
        b"[1, 2]",
        b'{"logs": null}',
        b'{"logs": 3, "a": "logs"}',
    ],
)
def test_bodies_without_a_top_level_logs_string_decode_the_plain_way(body: bytes) -> None:
    assert loads_training(body, slice_bytes=32) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"logs": "abc', b'{"logs": "a\\', b'{"logs": "ok"', b"\xff\xfe"])
def test_malformed_bodies_raise_as_json_loads_does(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        loads_training(body, slice_bytes=32)
