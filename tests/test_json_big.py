"""A training's huge `logs` string decoded in slices, from a body in chunks, gives exactly what
`json.loads` gives, and when asked for its tail only, the tail of what `json.loads` gives."""

from __future__ import annotations

import json
import random

import pytest

from jobwidget.engine.providers.json_big import LongLog, loads_training

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


def _chunked(body: bytes, rng: random.Random) -> list[bytes]:
    """`body` cut anywhere into a few chunks, as a network read hands it over."""
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(4)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


@pytest.mark.parametrize("slice_bytes", [32, 33, 40, 64])
def test_sliced_decoding_equals_json_loads(slice_bytes: int) -> None:
    rng = random.Random(slice_bytes)
    for _ in range(1500):
        body = _body(rng)
        assert loads_training(_chunked(body, rng), slice_bytes=slice_bytes) == json.loads(body), body[:200]


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
    assert loads_training([body], slice_bytes=32) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"logs": "abc', b'{"logs": "a\\', b'{"logs": "ok"', b"\xff\xfe"])
def test_malformed_bodies_raise_as_json_loads_does(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        loads_training([body], slice_bytes=32)


@pytest.mark.parametrize("slice_bytes", [32, 57, 100])
def test_a_tail_kept_is_the_end_of_the_log_with_what_was_asked(slice_bytes: int) -> None:
    rng = random.Random(slice_bytes)
    cut = 0
    for _ in range(800):
        body = _body(rng)
        whole = json.loads(body)
        keep_chars, keep_lines = rng.randrange(0, 200), rng.randrange(0, 30)
        got = loads_training(
            _chunked(body, rng), keep_chars=keep_chars, keep_lines=keep_lines, slice_bytes=slice_bytes
        )
        log = got["logs"]
        assert {**got, "logs": None} == {**whole, "logs": None}
        if isinstance(log, str):  # kept whole: the slices never held more than was asked
            assert log == whole["logs"]
            continue
        cut += 1
        assert isinstance(log, LongLog)
        assert whole["logs"].endswith(log.tail) and len(log.tail) < len(whole["logs"])
        assert log.chars == len(whole["logs"]) and log.newlines == whole["logs"].count("\n")
        assert len(log.tail) >= keep_chars and log.tail.count("\n") > keep_lines
    assert cut > 100, f"only {cut} of 800 logs were long enough to be cut"


def test_a_10_mb_log_in_network_sized_chunks_keeps_a_bounded_tail() -> None:
    line = "step 1/2 loss 0.5 \u00e9\n"  # escapes, a non-ASCII character
    body = json.dumps({"id": "abc", "logs": line * 500_000, "status": "processing"}).encode()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    got = loads_training(chunks, keep_chars=1 << 20, keep_lines=200)
    log = got["logs"]
    assert isinstance(log, LongLog)
    assert log.chars == len(line) * 500_000 and log.newlines == 500_000
    assert (1 << 20) <= len(log.tail) <= 3 << 20  # the bound and at most two slices more
    assert log.tail.endswith(line * 1000) and got["status"] == "processing"
