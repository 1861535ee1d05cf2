"""Standard Webhooks verification (pure) and the store's webhook-id deduplication."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobwidget.core.webhooks as webhooks
import jobwidget.engine.stores.sqlite_file as store_mod
from jobwidget.core.errors import ConfigError, WebhookVerificationError
from jobwidget.core.models import JobStatus
from jobwidget.core.webhooks import check_headers, decode_secret, sign, verify
from jobwidget.engine.stores import JobStore

from .fakes import make_job
from .paths import REPLICATE_FIXTURES

VECTOR = json.loads((REPLICATE_FIXTURES / "replicate_python_webhook_test_vector.json").read_text())
SECRET = VECTOR["secret"]["key"]
TS = int(VECTOR["headers"]["Webhook-Timestamp"])
BODY = VECTOR["body"]


def headers(
    msg_id: str = "msg_1", ts: int = TS, body: str | bytes = BODY, secret: str = SECRET
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


# -- the fixture's test vector ---------------------------------------------------------------------


def test_reference_test_vector_verifies_with_now_pinned():
    parsed = verify(SECRET, VECTOR["headers"], VECTOR["body"], now=TS)
    assert parsed.msg_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert parsed.timestamp == TS
    # The same bytes, as bytes, and the secret without its prefix.
    verify(SECRET.removeprefix("whsec_"), VECTOR["headers"], VECTOR["body"].encode(), now=TS)


def test_sign_reproduces_the_vector_signature():
    h = VECTOR["headers"]
    assert sign(SECRET, h["Webhook-ID"], TS, BODY) == h["Webhook-Signature"]


@pytest.mark.parametrize("case", ["lower", "upper", "mixed", "pairs"])
def test_header_names_are_case_insensitive(case: str):
    h = VECTOR["headers"]
    variants = {
        "lower": {k.lower(): v for k, v in h.items()},
        "upper": {k.upper(): v for k, v in h.items()},
        "mixed": h,
        "pairs": list(h.items()),
    }
    verify(SECRET, variants[case], BODY, now=TS)


# -- refusals, each with its reason ---------------------------------------------------------------


def test_body_altered_by_one_byte_is_refused():
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(SECRET, VECTOR["headers"], BODY.replace("2432232314", "2432232315"), now=TS)


def test_wrong_secret_is_refused():
    other = "whsec_" + base64.b64encode(b"another secret, not Replicate's").decode()
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(other, VECTOR["headers"], BODY, now=TS)


def test_timestamp_is_part_of_the_signed_content():
    h = dict(VECTOR["headers"], **{"Webhook-Timestamp": str(TS + 1)})
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(SECRET, h, BODY, now=TS)


@pytest.mark.parametrize(
    ("now", "reason"),
    [(TS + 301, "old"), (TS - 301, "future"), (TS + 10_000_000, "stale or replayed")],
)
def test_timestamps_beyond_five_minutes_are_refused(now: int, reason: str):
    with pytest.raises(WebhookVerificationError, match=reason):
        verify(SECRET, VECTOR["headers"], BODY, now=now)


@pytest.mark.parametrize("now", [TS - 300, TS + 300, TS + 299.5])
def test_timestamps_within_tolerance_pass(now: float):
    verify(SECRET, VECTOR["headers"], BODY, now=now)


def test_tolerance_is_configurable():
    with pytest.raises(WebhookVerificationError, match="tolerance 60"):
        verify(SECRET, VECTOR["headers"], BODY, now=TS + 61, tolerance=60)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(missing: str):
    h = {k: v for k, v in headers().items() if k != missing}
    with pytest.raises(WebhookVerificationError, match=f"missing webhook header.*{missing}"):
        verify(SECRET, h, BODY, now=TS)


@pytest.mark.parametrize("ts", ["abc", "-5", "1614265330.5", "", " ", "1" * 40, "١٦١٤"])
def test_malformed_timestamp_is_refused(ts: str):
    h = dict(headers(), **{"webhook-timestamp": ts})
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, h, BODY, now=TS)


@pytest.mark.parametrize("msg_id", ["has space", "x" * 300, "tab\tid", "é"])
def test_malformed_webhook_id_is_refused(msg_id: str):
    h = dict(headers(), **{"webhook-id": msg_id})
    with pytest.raises(WebhookVerificationError, match="webhook-id"):
        verify(SECRET, h, BODY, now=TS)


def test_several_signatures_one_valid_passes_in_any_position():
    good = headers()["webhook-signature"]
    bogus = "v1," + base64.b64encode(b"x" * 32).decode()
    for entries in ([bogus, good], [good, bogus], ["v2,whatever", bogus, good], [bogus, "v1a,zzz", good]):
        h = dict(headers(), **{"webhook-signature": " ".join(entries)})
        verify(SECRET, h, BODY, now=TS)


def test_only_unknown_versions_or_empty_entries_are_refused():
    for value in ("v2,abc", "v1,", "garbage", "v1a,abc v0,abc"):
        h = dict(headers(), **{"webhook-signature": value})
        with pytest.raises(WebhookVerificationError, match="no 'v1,<base64>' entry"):
            verify(SECRET, h, BODY, now=TS)


def test_too_many_signatures_are_refused_before_any_hashing():
    h = dict(headers(), **{"webhook-signature": " ".join(["v1,abc"] * 100)})
    with pytest.raises(WebhookVerificationError, match="too many"):
        check_headers(h, now=TS)


def test_every_entry_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[bytes, bytes]] = []
    real = webhooks.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    good = headers()["webhook-signature"]
    h = dict(headers(), **{"webhook-signature": f"{good} v1,AAAA v1,BBBB"})
    verify(SECRET, h, BODY, now=TS)
    assert len(calls) == 3  # no early exit: timing does not tell which entry matched


# -- secrets ----------------------------------------------------------------------------------------


def test_decode_secret_accepts_prefix_or_bare_base64_and_refuses_garbage():
    key = decode_secret(SECRET)
    assert key == base64.b64decode(SECRET.removeprefix("whsec_"))
    assert decode_secret(SECRET.removeprefix("whsec_")) == key
    assert decode_secret(b"raw-key") == b"raw-key"
    for bad in ("whsec_not base64!", "whsec_", "", b""):
        with pytest.raises(ConfigError):
            decode_secret(bad)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=512),
    msg_id=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    ts=st.integers(min_value=0, max_value=4_000_000_000),
    flip=st.integers(min_value=0, max_value=511),
)
def test_property_sign_then_verify_and_any_flipped_byte_fails(body: bytes, msg_id: str, ts: int, flip: int):
    h = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, msg_id, ts, body),
    }
    verify(SECRET, h, body, now=ts)
    if body:
        i = flip % len(body)
        altered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        with pytest.raises(WebhookVerificationError):
            verify(SECRET, h, altered, now=ts)


# -- deduplication in the store ---------------------------------------------------------------------


def test_a_delivery_is_applied_once_and_survives_a_restart(tmp_path: Path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    first = store.upsert_delivery("msg_a", [make_job(1)])
    assert not first.duplicate and [j.job_id for j in first.created] == ["job00001"]
    again = store.upsert_delivery("msg_a", [make_job(1, "completed")])  # a retry with a later state
    assert again.duplicate and again.changed == [] and again.rev == first.rev
    assert store.get("job00001").status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert not store.upsert_delivery("msg_b", [make_job(2)]).duplicate
    store.close()
    reopened = JobStore(path)  # a restarted server (or another process) still knows the delivery
    assert reopened.upsert_delivery("msg_a", [make_job(1, "completed")]).duplicate
    assert reopened.delivery_seen("msg_a") and not reopened.delivery_seen("msg_c")
    reopened.close()


def test_a_delivery_whose_update_fails_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The record and the update commit together: an error between them leaves neither, so the
    provider's retry of the delivery is applied instead of being taken for a duplicate."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    real = store._upsert_in

    def failing(*args: object, **kwargs: object) -> object:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_upsert_in", failing)
    with pytest.raises(sqlite3.OperationalError):
        store.upsert_delivery("msg_fail", [make_job(1)])
    assert not store.delivery_seen("msg_fail") and store.get("job00001") is None
    monkeypatch.setattr(store, "_upsert_in", real)
    retry = store.upsert_delivery("msg_fail", [make_job(1)])
    assert not retry.duplicate and store.get("job00001") is not None
    store.close()


def test_old_ids_are_pruned_after_the_retention(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    assert not store.upsert_delivery("old", [make_job(1)], now=t0, keep=60).duplicate
    later = t0 + timedelta(seconds=100)
    assert not store.upsert_delivery("new", [make_job(2)], now=later, keep=60).duplicate  # prunes "old"
    assert not store.delivery_seen("old")
    assert store.upsert_delivery("new", [make_job(2)], now=later + timedelta(seconds=1), keep=60).duplicate
    store.close()


def test_deliveries_from_two_connections_agree(tmp_path: Path):
    path = tmp_path / "jobs.sqlite3"
    a, b = JobStore(path), JobStore(path)
    results = [a.upsert_delivery("msg_x", [make_job(1)]), b.upsert_delivery("msg_x", [make_job(1)])]
    assert sorted(r.duplicate for r in results) == [False, True]
    a.close()
    b.close()


def test_a_version_1_store_migrates_to_the_current_version_keeping_jobs(tmp_path: Path):
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    for statement in store_mod._MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    conn.execute("INSERT INTO jobs (job_id, provider, status) VALUES ('old1', 'replicate', 'running')")
    conn.commit()
    conn.close()
    store = JobStore(path)  # a store written by jobwidget with schema 1 migrates in place
    assert store.get("old1") is not None
    assert not store.upsert_delivery("msg_1", [make_job(1)]).duplicate
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION >= 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "webhook_deliveries"} <= tables
    conn.close()
    again = JobStore(path)
    assert again.get("old1") is not None and again.get("job00001") is not None
    assert again.delivery_seen("msg_1")
    again.close()
