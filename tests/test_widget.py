"""The live panel's kernel side: snapshot/patch protocol, coalescing, threads, payload size, messages.

No browser and no kernel: `comm.create_comm` is replaced by a recording comm, so every byte the panel
would put on the wire is captured here (trait updates and custom messages alike).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm

from jobwidget.core.models import Job, JobStatus
from jobwidget.core.results import SyncResult
from jobwidget.surfaces import panel_inbox
from jobwidget.surfaces.front_end import front_end_module
from jobwidget.surfaces.widget import JobsPanel, job_to_card, static_path

from .deadlines import DEADLINE

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class RecordingComm(BaseComm):
    """A comm that keeps what it would publish: (msg_type, data) in order, from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._rec_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        with self._rec_lock:
            self.messages.append((msg_type, data))


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch):
    monkeypatch.setattr(comm, "create_comm", lambda *a, **kw: RecordingComm(*a, **kw))


@pytest.fixture
def panels():
    made: list[JobsPanel] = []

    def make(**kwargs: Any) -> JobsPanel:
        panel = JobsPanel(**kwargs)
        made.append(panel)
        return panel

    yield make
    for panel in made:
        panel.close()


def wire_size(data: Any) -> int:
    """Bytes of a comm message's data as Jupyter packs it (json, ensure_ascii=False, UTF-8)."""
    return len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8"))


def sent(panel: JobsPanel) -> list[tuple[str, Any]]:
    return list(panel.comm.messages)


def customs(panel: JobsPanel, kind: str | None = None) -> list[dict[str, Any]]:
    out = []
    for msg_type, data in sent(panel):
        is_custom = msg_type == "comm_msg" and data.get("method") == "custom"
        if is_custom and (kind is None or data["content"].get("type") == kind):
            out.append(data["content"])
    return out


def snapshot_updates(panel: JobsPanel) -> list[dict[str, Any]]:
    return [
        data["state"]["snapshot"]
        for msg_type, data in sent(panel)
        if msg_type == "comm_msg" and data.get("method") == "update" and "snapshot" in data.get("state", {})
    ]


def from_view(panel: JobsPanel, content: dict[str, Any]) -> None:
    """Deliver a message as the browser would (through ipywidgets' comm handler)."""
    panel._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


class FakeView:
    """Replays the panel's wire messages the way js/src/widget.js does: snapshot, patches in seq order."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.seq = -1
        self.cards: dict[str, dict[str, Any]] = {}
        self.gaps = 0
        self.apply_snapshot(snapshot)

    def apply_snapshot(self, snap: dict[str, Any]) -> None:
        if snap["seq"] > self.seq:
            self.cards = {c["id"]: c for c in snap["jobs"]}
            self.seq = snap["seq"]

    def feed(self, messages: list[tuple[str, Any]]) -> None:
        for msg_type, data in messages:
            if msg_type != "comm_msg":
                continue
            if data.get("method") == "update" and "snapshot" in data["state"]:
                self.apply_snapshot(data["state"]["snapshot"])
            elif data.get("method") == "custom" and data["content"].get("type") == "patch":
                patch = data["content"]
                if patch["seq"] <= self.seq:
                    continue
                if patch["seq"] != self.seq + 1:
                    self.gaps += 1
                    continue
                for job_id in patch["remove"]:
                    self.cards.pop(job_id, None)
                for card in patch["upsert"]:
                    self.cards[card["id"]] = card
                for diff in patch.get("update", []):
                    merged = {**self.cards[diff["id"]], **diff}  # KeyError: an update for an unknown card
                    self.cards[diff["id"]] = {k: v for k, v in merged.items() if v is not None}
                self.seq = patch["seq"]


def make_job(i: int, **changes: Any) -> Job:
    """A realistic running Replicate training with every field a card shows."""
    fields: dict[str, Any] = {
        "job_id": f"q{i:05d}rz7x3m9cqf2vwk8{i % 10}",
        "provider": "replicate",
        "status": JobStatus.RUNNING,
        "name": f"flux-lora-portraits-v{i}",
        "model": "ostris/flux-dev-lora-trainer",
        "version": "e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497",
        "hardware": "gpu-h100",
        "created_at": T0 + timedelta(seconds=i),
        "started_at": T0 + timedelta(seconds=i + 30),
        "cost_usd": 0.4213 + i / 1000,
        "web_url": f"https://replicate.com/p/q{i:05d}rz7x3m9cqf2vwk8{i % 10}",
        "stage": "Training",
        "progress": 30.0,
        "last_log": "flux_train_replicate:  30%|███       | 300/1000 [05:00<11:40,  1.00s/it, loss: 3.5e-01]",
        "updated_at": T0 + timedelta(seconds=i + 60),
        "metadata": {
            "cost_estimate": True,
            "inline": {"step": 300, "total_steps": 1000, "eta_seconds": 700.0, "rate": 1.0, "loss": 0.35},
        },
    }
    fields.update(changes)
    return Job(**fields)


def wait_until(predicate, timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ----------------------------------------------------------------------------- front-end files


def test_front_end_ships_as_one_es_module_without_imports(tmp_path):
    """What anywidget inlines: protocol.js and widget.js joined, with no import left (an inlined module
    cannot resolve one), the view's default export, and the protocol's helpers."""
    module = front_end_module()
    assert JobsPanel._esm == module
    css = static_path("widget.css").read_text()
    assert ".jw-root" in css and "--jp-" in css
    assert "export default { render }" in module and "export function planPatch" in module
    assert not re.search(r"^\s*import\b", module, re.M), "the shipped module must import nothing"
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in module, f"{sink}: data must go in with textContent"
    # The SVG namespace is an identifier (createElementNS), never fetched: the one http:// allowed; a
    # JSDoc type named from the protocol (`{import("./protocol.js").Card}`) is a comment, not an import.
    code = module.replace('"http://www.w3.org/2000/svg"', "")
    code = re.sub(r'\{import\("\./protocol\.js"\)\.\w+\}', "", code)
    assert not any(s in code for s in ("http://", "import(", 'from "http')), "no network imports"
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    copy = tmp_path / "widget.mjs"
    copy.write_text(module)
    probe = tmp_path / "probe.mjs"
    probe.write_text(
        'import widget, { formatDuration, planPatch, createPanel } from "./widget.mjs";\n'
        "const fns = [widget.render, formatDuration, planPatch, createPanel];\n"
        "const ok = fns.every((f) => typeof f === 'function');\n"
        "if (!ok || formatDuration(75) !== '1m 15s') process.exit(3);\n"
    )
    result = subprocess.run([node, str(probe)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_shipped_module_refuses_an_import_it_cannot_keep(tmp_path, monkeypatch):
    from jobwidget.surfaces import front_end

    (tmp_path / "protocol.js").write_text("export const A = 1;\n")
    (tmp_path / "widget.js").write_text('import { A } from "./protocol.js";\nimport x from "./other.js";\n')
    monkeypatch.setattr(front_end, "static_path", lambda name: tmp_path / name)
    front_end.front_end_module.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="may import only"):
            front_end.front_end_module()
        (tmp_path / "widget.js").write_text('import {\n  A,\n} from "./protocol.js";\nexport const B = A;\n')
        assert (
            front_end.front_end_module()
            == "export const A = 1;\n\n// ---- js/src/widget.js\nexport const B = A;\n"
        )
    finally:
        front_end.front_end_module.cache_clear()


def test_the_protocol_description_names_every_message_the_kernel_handles_and_sends():
    """js/src/protocol.js is the one description: each view message it types is one the kernel handles,
    and each kernel message it types is one the kernel sends (and no other)."""
    text = static_path("protocol.js").read_text()
    typed = set(re.findall(r'type: "(\w+)"', text)) | set(re.findall(r'@property \{"(\w+)"\} type', text))
    inbox = (ROOT / "jobwidget/surfaces/panel_inbox.py").read_text()
    handled = set(re.findall(r'kind == "(\w+)"', inbox))
    kernel_side = "".join(
        (ROOT / f"jobwidget/surfaces/{name}.py").read_text()
        for name in ("widget", "panel_detail", "panel_inbox")
    )
    sent = set(re.findall(r'"type": "(\w+)"', kernel_side))
    assert handled and sent and handled | sent == typed, (sorted(typed), sorted(handled), sorted(sent))


# ----------------------------------------------------------------------------- cards


def test_card_holds_what_the_card_shows_compactly():
    card = job_to_card(make_job(7))
    assert card == {
        "id": "q00007rz7x3m9cqf2vwk87",
        "status": "running",
        "name": "flux-lora-portraits-v7",
        "model": "ostris/flux-dev-lora-trainer",
        "hw": "gpu-h100",
        "stage": "Training",
        "pct": 30.0,
        "log": "flux_train_replicate:  30%|███       | 300/1000 [05:00<11:40,  1.00s/it, loss: 3.5e-01]",
        "step": 300,
        "total": 1000,
        "eta": 700,
        "rate": 1.0,
        "loss": 0.35,
        "cost": 0.4283,
        "est": True,
        "created": int((T0 + timedelta(seconds=7)).timestamp()),
        "started": int((T0 + timedelta(seconds=37)).timestamp()),
        "url": "https://replicate.com/p/q00007rz7x3m9cqf2vwk87",
    }
    assert wire_size(card) < 600


def test_card_of_a_finished_job_drops_live_fields_and_shows_the_error():
    job = make_job(
        1,
        status=JobStatus.FAILED,
        completed_at=T0 + timedelta(hours=1),
        error_message="CUDA out of memory. " + "x" * 500,
        metadata={"cost_estimate": True, "inline": {"step": 450, "total_steps": 1000, "eta_seconds": 5}},
    )
    card = job_to_card(job)
    assert card["status"] == "failed"
    assert "stage" not in card and "eta" not in card and "rate" not in card and "est" not in card
    assert card["step"] == 450
    assert card["err"].startswith("CUDA out of memory.") and len(card["err"]) <= 160
    assert card["err"].endswith("...")
    assert card["ended"] == int((T0 + timedelta(hours=1)).timestamp())


@pytest.mark.parametrize(
    "url",
    [
        "http://replicate.com/p/x",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://",
        "https://replicate.com/p/x y",
        "https://replicate.com/p/\nx",
        "HTTPS://replicate.com/p/x",
        "https://example.com/" + "a" * 400,
        "",
        None,
    ],
)
def test_card_links_only_to_https(url):
    assert "url" not in job_to_card(make_job(1, web_url=url))


def test_card_notes_why_a_job_is_not_polled_and_never_carries_secrets():
    job = make_job(
        2,
        error_message="401 Unauthorized: token r8_AbCdEfGh1234567890 rejected (Bearer r8_AbCdEfGh1234567890)",
        metadata={"poll_stopped": "the provider answered 404 Not Found"},
    )
    card = job_to_card(job)
    assert "r8_AbCdEfGh" not in json.dumps(card)
    assert "[redacted]" in card["err"]
    assert card["note"] == "Not polled any more: the provider answered 404 Not Found"
    assert "est" not in card  # no cost_estimate flag in this job's metadata


def test_card_survives_odd_numbers():
    job = make_job(
        3, progress=float("nan"), metadata={"inline": {"step": "x", "rate": float("inf"), "loss": 0}}
    )
    card = job_to_card(job)
    assert "pct" not in card and "step" not in card and "rate" not in card
    assert card["loss"] == 0
    json.dumps(card, allow_nan=False)


# ----------------------------------------------------------------------------- protocol


def test_patches_carry_only_changed_cards_in_sequence(panels):
    panel = panels()
    view = FakeView(panel.snapshot)
    panel.set_jobs([make_job(i) for i in range(3)])
    panel.flush()
    patches = customs(panel, "patch")
    assert [p["seq"] for p in patches] == [1]
    assert {c["id"] for c in patches[0]["upsert"]} == {make_job(i).job_id for i in range(3)}

    time.sleep(0.11)
    panel.upsert([make_job(1, progress=31.0)])
    panel.upsert([make_job(2)])  # unchanged: nothing to send
    panel.flush()
    patches = customs(panel, "patch")
    assert [p["seq"] for p in patches] == [1, 2]
    assert patches[1]["remove"] == []

    assert "upsert" in patches[1] and patches[1]["upsert"] == []
    assert patches[1]["update"] == [{"id": make_job(1).job_id, "pct": 31.0}]  # only what changed

    panel.remove([make_job(0).job_id, "never-seen"])
    panel.flush()
    patches = customs(panel, "patch")
    assert patches[-1]["seq"] == 3 and patches[-1]["remove"] == [make_job(0).job_id]
    assert patches[-1]["upsert"] == []

    panel.set_jobs([make_job(1, progress=31.0), make_job(9)])  # drops job 2, adds job 9
    panel.flush()
    assert customs(panel, "patch")[-1]["remove"] == [make_job(2).job_id]
    # no snapshot was re-sent for any of these small changes
    assert snapshot_updates(panel) == []
    view.feed(sent(panel))
    assert view.seq == panel.seq == 4 and view.gaps == 0
    assert view.cards == panel.cards()


def test_a_late_view_resyncs_from_the_snapshot(panels):
    panel = panels()
    panel.set_jobs([make_job(i) for i in range(5)])
    panel.flush()
    panel.upsert([make_job(1, progress=40.0)])
    panel.flush()
    # a view that loads now sees the snapshot trait (still empty at seq 0): it asks for a resync
    late = FakeView(panel.snapshot)
    assert late.seq == 0 and late.cards == {}
    before = len(sent(panel))
    from_view(panel, {"type": "resync", "seq": late.seq})
    answer = sent(panel)[before:]
    late.feed(answer)
    assert late.seq == panel.seq == 2
    assert late.cards == panel.cards()
    assert customs(panel, "hello")[-1]["seq"] == 2
    # an up-to-date view gets only a hello, not a second copy of every card
    before = len(sent(panel))
    from_view(panel, {"type": "resync", "seq": 2})
    assert [d["content"]["type"] for _, d in sent(panel)[before:]] == ["hello"]
    # garbage seq is treated as "behind"; the snapshot is already current so it is not resent
    before = len(sent(panel))
    from_view(panel, {"type": "resync", "seq": True})
    assert [d["content"]["type"] for _, d in sent(panel)[before:]] == ["hello"]


def test_a_view_that_missed_a_patch_catches_up(panels):
    panel = panels()
    view = FakeView(panel.snapshot)
    panel.set_jobs([make_job(i) for i in range(4)])
    panel.flush()
    view.feed(sent(panel))
    mark = len(sent(panel))
    time.sleep(0.11)
    panel.upsert([make_job(0, progress=50.0)])
    panel.flush()
    time.sleep(0.11)
    panel.upsert([make_job(1, progress=60.0)])
    panel.flush()
    missed_first = [m for m in sent(panel)[mark:] if m[1]["content"]["seq"] != 2]
    view.feed(missed_first)  # seq 2 was lost: seq 3 is a gap
    assert view.gaps == 1 and view.seq == 1
    before = len(sent(panel))
    from_view(panel, {"type": "resync", "seq": view.seq})
    view.feed(sent(panel)[before:])
    assert view.seq == panel.seq and view.cards == panel.cards()


def test_display_refreshes_the_snapshot_so_a_new_view_needs_no_round_trip(panels):
    panel = panels()
    panel.set_jobs([make_job(i) for i in range(3)])  # small: a patch, the snapshot trait stays empty
    assert panel.snapshot["jobs"] == []
    panel.upsert([make_job(1, progress=90.0)])  # pending in the coalescing window
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle[0]
    assert panel.snapshot["seq"] == panel.seq == 2
    view = FakeView(panel.snapshot)  # what the new view reads at render
    assert view.cards == panel.cards()
    before = len(snapshot_updates(panel))
    panel._repr_mimebundle_()  # nothing changed: no second copy
    assert len(snapshot_updates(panel)) == before


def test_a_change_undone_within_a_window_sends_nothing(panels):
    panel = panels(max_flush_hz=2)
    panel.set_jobs([make_job(1)])
    n = len(sent(panel))
    panel.upsert([make_job(1, progress=99.0)])
    panel.upsert([make_job(1)])
    panel.flush()
    assert len(sent(panel)) == n and panel.seq == 1


def test_a_large_change_goes_out_as_one_snapshot(panels):
    panel = panels()
    panel.set_jobs([make_job(i) for i in range(1000)])
    panel.flush()
    assert customs(panel, "patch") == []
    snaps = snapshot_updates(panel)
    assert len(snaps) == 1 and snaps[0]["seq"] == 1 and len(snaps[0]["jobs"]) == 1000


def test_upserts_in_a_burst_coalesce_into_a_few_flushes(panels):
    panel = panels(max_flush_hz=10)
    panel.set_jobs([make_job(i) for i in range(5)])
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 0.35 and n < 10_000:
        panel.upsert([make_job(n % 5, progress=(n % 1000) / 10)])
        n += 1
        time.sleep(0.0005)
    elapsed = time.monotonic() - start
    assert wait_until(lambda: panel._timer is None and not panel._dirty)
    flushes = len(customs(panel, "patch")) + len(snapshot_updates(panel))
    assert n > 100
    # leading flush + one per 100 ms window + the trailing one
    assert flushes <= elapsed * 10 + 3, (flushes, n, elapsed)
    view = FakeView({"seq": 0, "jobs": []})
    view.feed(sent(panel))
    assert view.cards == panel.cards()


def test_upserts_from_many_threads_keep_order_and_state(panels):
    panel = panels(max_flush_hz=50)
    jobs = 60
    panel.set_jobs([make_job(i) for i in range(jobs)])
    panel.flush()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(300):
                i = (t * 7 + k) % jobs
                panel.upsert([make_job(i, progress=float((t * 300 + k) % 100))])
                if k % 50 == 0:
                    panel.remove([make_job(jobs + t).job_id])
                    panel.upsert([make_job(jobs + t)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    panel.flush()
    seqs = [p["seq"] for p in customs(panel, "patch")] + [s["seq"] for s in snapshot_updates(panel)]
    assert sorted(seqs) == list(range(1, panel.seq + 1))  # every seq used once
    patch_seqs = [p["seq"] for p in customs(panel, "patch")]
    assert patch_seqs == sorted(patch_seqs)  # sent in order
    view = FakeView({"seq": 0, "jobs": []})
    view.feed(sent(panel))
    assert view.gaps == 0
    assert view.cards == panel.cards()
    assert len(view.cards) == jobs + 8


def test_one_progress_change_among_1000_jobs_sends_under_1_kb(panels, capsys):
    panel = panels()
    jobs = [make_job(i) for i in range(1000)]
    panel.set_jobs(jobs)
    panel.flush()
    snapshot_bytes = wire_size({"method": "update", "state": {"snapshot": panel.snapshot}})
    time.sleep(0.11)
    before = len(sent(panel))
    changed = jobs[500].evolve(
        progress=30.1,
        last_log="flux_train_replicate:  30%|███       | 301/1000 [05:01<11:39,  1.00s/it, loss: 3.4e-01]",
        metadata={
            "cost_estimate": True,
            "inline": {"step": 301, "total_steps": 1000, "eta_seconds": 699.0, "rate": 1.0, "loss": 0.34},
        },
    )
    panel.upsert([changed])
    panel.flush()
    messages = sent(panel)[before:]
    sizes = [wire_size(data) for _, data in messages]
    assert len(messages) == 1 and messages[0][1]["content"]["type"] == "patch"
    assert sum(sizes) <= 1024, sizes
    # even a change that rewrites the whole card stays under 1 KB
    time.sleep(0.11)
    before = len(sent(panel))
    panel.remove([jobs[600].job_id])
    panel.flush()
    panel.upsert([jobs[600]])
    panel.flush()
    full = wire_size(sent(panel)[-1][1])
    assert sent(panel)[-1][1]["content"]["upsert"] and full <= 1024, full
    with capsys.disabled():
        print(
            f"\n[payload] 1,000 jobs: snapshot {snapshot_bytes} B; one progress change {sum(sizes)} B; "
            f"one whole new card {full} B"
        )


# ----------------------------------------------------------------------------- status, sync, messages


def test_status_carries_freshness_demo_and_error(panels):
    panel = panels()
    panel.set_status(provider_label="Replicate", demo=True, source="poll", updated_at=T0, polling=True)
    panel.flush()
    st = panel.status
    assert st["provider"] == "Replicate" and st["demo"] is True and st["source"] == "poll"
    assert st["updated_at"] == T0.timestamp() and st["error"] is None and st["polling"] is True
    panel.set_status(provider_label="Replicate", demo=False, updated_at=T0, error="Rate limited (429)")
    panel.flush()
    assert panel.status["error"] == "Rate limited (429)"
    panel.set_status(provider_label="Replicate", demo=False, updated_at=T0, error=None)
    panel.flush()
    assert panel.status["error"] is None


def test_status_updates_are_deduplicated_and_rate_limited(panels):
    panel = panels(max_flush_hz=10)
    status_msgs = lambda: [d for t, d in sent(panel) if t == "comm_msg" and "status" in d.get("state", {})]  # noqa: E731
    panel.set_status(provider_label="Replicate", demo=False, updated_at=T0)
    assert len(status_msgs()) == 1  # the first goes out at once
    for i in range(200):  # an engine event storm
        panel.set_status(provider_label="Replicate", demo=False, updated_at=T0 + timedelta(seconds=i))
    assert len(status_msgs()) == 1  # the rest wait for the next slot...
    assert wait_until(lambda: len(status_msgs()) == 2)
    assert (
        panel.status["updated_at"] == (T0 + timedelta(seconds=199)).timestamp()
    )  # ...and only the last goes
    time.sleep(0.15)
    panel.set_status(provider_label="Replicate", demo=False, updated_at=T0 + timedelta(seconds=199))
    panel.flush()
    assert len(status_msgs()) == 2  # unchanged: nothing sent


def test_sync_round_trip_toasts_the_result_message(panels):
    calls: list[str] = []
    panel = panels(on_sync=lambda: calls.append("sync"))
    from_view(panel, {"type": "sync"})
    assert calls == ["sync"] and panel.syncing is True
    panel.sync_finished(SyncResult(synced=3, updated=5, message="Discovered 3 new jobs from Replicate"))
    assert panel.syncing is False
    toast = customs(panel, "toast")[-1]
    assert toast["text"] == "Discovered 3 new jobs from Replicate"
    assert toast["synced"] == 3 and toast["level"] == "info"
    panel.sync_finished(None, error="provider unavailable")
    assert customs(panel, "toast")[-1] == {
        "type": "toast",
        "level": "error",
        "text": "Sync failed: provider unavailable",
        "now": customs(panel, "toast")[-1]["now"],
    }
    panel.set_status(provider_label="Replicate", demo=False)
    panel.sync_finished(SyncResult(synced=1, updated=0, message=""))
    assert customs(panel, "toast")[-1]["text"] == "Discovered 1 new job from Replicate"
    # the reference's bug: a tuple for synced never reaches the toast as a count
    panel.sync_finished(SyncResult(synced=(3, 2), updated=0, message="Discovered 3 new jobs from Replicate"))  # type: ignore[arg-type]
    assert customs(panel, "toast")[-1]["text"] == "Discovered 3 new jobs from Replicate"
    assert "synced" not in customs(panel, "toast")[-1]


def test_callbacks_that_raise_become_error_toasts(panels):
    def boom(*_: Any) -> None:
        raise RuntimeError("engine is down")

    panel = panels(on_sync=boom, on_cancel=boom, on_visible=boom)
    panel.set_jobs([make_job(1)])
    from_view(panel, {"type": "sync"})
    assert panel.syncing is False
    assert customs(panel, "toast")[-1]["text"] == "Sync failed: engine is down"
    from_view(panel, {"type": "cancel", "job_id": make_job(1).job_id})
    assert customs(panel, "toast")[-1]["level"] == "error"
    assert "engine is down" in customs(panel, "toast")[-1]["text"]
    from_view(panel, {"type": "visible", "visible": True, "view": "v1"})
    assert "engine is down" in customs(panel, "toast")[-1]["text"]
    # junk from the view is ignored
    for junk in (None, [], "x", {"type": "nope"}, {"type": "cancel", "job_id": 5}, {"no": "type"}):
        panel._handle_msg({"content": {"data": {"method": "custom", "content": junk}}, "buffers": []})


def test_cancel_calls_back_for_active_jobs_only(panels):
    cancelled: list[str] = []
    panel = panels(on_cancel=cancelled.append)
    done = make_job(2, status=JobStatus.COMPLETED, completed_at=T0 + timedelta(hours=1))
    panel.set_jobs([make_job(1), done])
    from_view(panel, {"type": "cancel", "job_id": make_job(1).job_id})
    assert cancelled == [make_job(1).job_id]
    assert customs(panel, "toast")[-1]["text"].startswith("Cancel requested for flux-lora-portraits-v1")
    from_view(panel, {"type": "cancel", "job_id": done.job_id})
    from_view(panel, {"type": "cancel", "job_id": "not-on-this-panel"})
    assert cancelled == [make_job(1).job_id]
    assert customs(panel, "toast")[-1]["level"] == "error"


def test_no_controller_means_a_clear_toast(panels):
    panel = panels()
    panel.set_jobs([make_job(1)])
    from_view(panel, {"type": "sync"})
    assert "not available" in customs(panel, "toast")[-1]["text"]
    from_view(panel, {"type": "cancel", "job_id": make_job(1).job_id})
    assert "not available" in customs(panel, "toast")[-1]["text"]
    assert panel.syncing is False


def test_visibility_is_any_view_on_screen(panels, monkeypatch):
    seen: list[bool] = []
    panel = panels(on_visible=seen.append)
    from_view(panel, {"type": "visible", "visible": True, "view": "a"})
    from_view(panel, {"type": "visible", "visible": True, "view": "b"})
    from_view(panel, {"type": "visible", "visible": False, "view": "a"})
    assert seen == [True] and panel.visible
    from_view(panel, {"type": "visible", "visible": False, "view": "b"})
    assert seen == [True, False] and not panel.visible
    # a view that vanished without saying so (closed tab) expires
    monkeypatch.setattr(panel_inbox, "_VIEW_EXPIRY_S", 0.05)
    from_view(panel, {"type": "visible", "visible": True, "view": "c"})
    assert seen[-1] is True
    time.sleep(0.1)
    panel.set_status(provider_label="Replicate", demo=False)
    assert seen == [True, False, True, False]


def test_close_stops_pending_flushes(panels):
    panel = panels(max_flush_hz=0.5)
    panel.set_jobs([make_job(1)])
    panel.upsert([make_job(1, progress=70.0)])  # waits for the next slot, 2 s away
    assert panel._timer is not None
    panel.close()
    assert panel._timer is None and panel.comm is None
    panel.upsert([make_job(1, progress=80.0)])  # after close: no error, no timer, nothing sent
    panel.flush()
    assert panel._timer is None


def test_bad_flush_rate_is_refused():
    for bad in (0, -1, float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError, match="max_flush_hz"):
            JobsPanel(max_flush_hz=bad)  # type: ignore[arg-type]


def test_no_token_or_environment_in_any_state_or_message(panels, monkeypatch):
    token = "r8_TopSecretToken0123456789abcdef"
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    monkeypatch.setenv("JOBWIDGET_WEBHOOK_SECRET", "whsec_MTIzNDU2Nzg5MGFiY2RlZg==")
    panel = panels(on_sync=lambda: None)
    panel.set_jobs([make_job(i, error_message=f"auth failed for {token}") for i in range(3)])
    panel.set_status(provider_label="Replicate", demo=False, error=f"401 with Bearer {token}")
    panel.flush()
    assert panel.status["error"] == "401 with Bearer [redacted]"
    from_view(panel, {"type": "resync", "seq": -1})
    panel.sync_finished(None, error=f"token {token} rejected")
    wire = json.dumps([data for _, data in sent(panel)], default=str)
    state = json.dumps(panel.get_state(), default=str)
    for blob in (wire, state):
        assert token not in blob and "TopSecret" not in blob
        assert "whsec_" not in blob


def test_repr_is_short_and_stable(panels):
    panel = panels()
    panel.set_jobs([make_job(1)])
    assert repr(panel) == "JobsPanel(jobs=1)"


@pytest.mark.slow
def test_wheel_ships_the_front_end(tmp_path):
    """The wheel must carry protocol.js, widget.js and widget.css where static_path() looks for them."""
    if shutil.which("hatchling") is None and not (Path(sys.executable).parent / "hatchling").exists():
        pytest.skip("hatchling is not installed")
    hatchling = shutil.which("hatchling") or str(Path(sys.executable).parent / "hatchling")
    result = subprocess.run(
        [hatchling, "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped = {f"jobwidget/static/{name}" for name in ("protocol.js", "widget.js", "widget.css")}
        assert shipped <= names, (
            "the wheel lacks the panel's front-end: pyproject.toml needs "
            "[tool.hatch.build.targets.wheel.force-include] mapping js/src/widget.js and js/src/widget.css "
            "to jobwidget/static/"
        )
        assert zf.read("jobwidget/static/widget.js") == (ROOT / "js" / "src" / "widget.js").read_bytes()
        assert not any("node_modules" in n for n in names)
        assert "jobwidget/py.typed" in names, "type checkers only read the hints of a package with py.typed"


# ----------------------------------------------------------------------------- heartbeat and totals


def test_heartbeat_runs_from_display_until_close_and_carries_the_seq(panels):
    panel = panels(heartbeat_s=0.02)
    panel.set_jobs([make_job(1)])
    panel.flush()
    assert not panel.beating and customs(panel, "beat") == []  # nothing displayed, nobody to tell
    panel._repr_mimebundle_()
    assert wait_until(lambda: len(customs(panel, "beat")) >= 3), "the panel never beat after display"
    beats = customs(panel, "beat")
    assert all(b["seq"] == panel.seq and isinstance(b["now"], float) for b in beats)
    assert all(len(json.dumps(b)) < 80 for b in beats)  # tiny: ~40 B every 2 s
    wire = panel.comm
    panel.close()
    assert not panel.beating  # the thread has ended: no beat can follow
    beats_sent = [d for t, d in wire.messages if d.get("content", {}).get("type") == "beat"]
    assert len(beats_sent) == panel.stats["beats"]


def test_heartbeat_starts_when_a_view_speaks(panels):
    """A view restored by a page reload never went through display: its first message starts the beat."""
    panel = panels(heartbeat_s=0.02)
    from_view(panel, {"type": "resync", "seq": 0})
    assert wait_until(lambda: len(customs(panel, "beat")) >= 2)


def test_error_status_carries_the_last_success_until_it_clears(panels):
    panel = panels()
    ok = T0 - timedelta(minutes=3)
    panel.set_status(provider_label="Replicate", demo=False, error="HTTP 401", last_success=ok)
    panel.flush()
    assert panel.status["error"] == "HTTP 401" and panel.status["last_success"] == int(ok.timestamp())
    panel.set_status(provider_label="Replicate", demo=False, error=None, last_success=ok)
    panel.flush()
    assert panel.status["error"] is None and panel.status["last_success"] is None  # no churn when fine


class CountingTotals:
    """A totals source over a list of jobs, counting its calls (the store's own query is tested apart)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, search: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            self.calls.append(search)
            out: dict[str, dict[str, Any]] = {}
            for job in self.jobs:
                hay = f"{job.job_id}\n{job.name}\n{job.model}".lower()
                if search.lower() in hay:
                    empty = {"count": 0, "cost": 0.0, "costed": 0, "estimated": 0}
                    t = out.setdefault(job.status.value, empty)
                    t["count"] += 1
                    t["cost"] += job.cost_usd or 0.0
                    t["costed"] += job.cost_usd is not None
                    t["estimated"] += job.cost_is_estimate
            return out


def test_totals_are_computed_for_display_and_for_each_views_search(panels):
    jobs = [make_job(i) for i in range(5)] + [
        make_job(i, status=JobStatus.COMPLETED, completed_at=T0 + timedelta(hours=1), name=f"sdxl-{i}")
        for i in range(5, 12)
    ]
    source = CountingTotals(jobs)
    panel = panels(totals=source)
    panel.set_jobs(jobs[:3])  # the panel shows a few; the totals count them all
    panel._repr_mimebundle_()
    everything = panel.totals["by_search"][""]  # there before the view renders: no flicker
    assert everything["running"]["n"] == 5 and everything["completed"]["n"] == 7
    assert everything["running"]["est"] == 5 and everything["completed"]["est"] == 0
    assert everything["running"]["cost"] == round(sum(j.cost_usd for j in jobs[:5]), 4)
    from_view(panel, {"type": "search", "text": "  sdxl ", "view": "v1"})
    from_view(panel, {"type": "search", "text": "portraits-v1", "view": "v2"})
    assert wait_until(lambda: {"sdxl", "portraits-v1"} <= set(panel.totals.get("by_search", {})))
    by = panel.totals["by_search"]
    assert list(by["sdxl"]) == ["completed"]
    assert by["sdxl"]["completed"] == {"n": 7, "cost": by["sdxl"]["completed"]["cost"], "costed": 7, "est": 0}
    assert by["portraits-v1"]["running"]["n"] == 1 and "completed" not in by["portraits-v1"]
    # a view that goes away takes its search with it
    from_view(panel, {"type": "search", "text": "", "view": "v1"})
    assert wait_until(lambda: set(panel.totals["by_search"]) == {"", "portraits-v1"})
    assert "r8_" not in json.dumps(panel.get_state(), default=str)


def test_totals_follow_job_changes_throttled_and_searches_are_capped(panels):
    jobs = [make_job(i) for i in range(4)]
    source = CountingTotals(jobs)
    panel = panels(totals=source)
    panel.set_jobs(jobs)
    panel._repr_mimebundle_()
    calls = len(source.calls)
    for step in range(200):  # a storm of progress ticks
        panel.upsert([make_job(step % 4, progress=float(step % 100))])
    jobs[0] = make_job(0, status=JobStatus.FAILED, completed_at=T0 + timedelta(hours=1))
    panel.upsert([jobs[0]])
    assert wait_until(lambda: panel.totals["by_search"][""].get("failed", {}).get("n") == 1)
    # 201 changes, a handful of queries: the worker folds requests and spaces its runs
    assert len(source.calls) - calls < 20, len(source.calls) - calls
    for v in range(20):
        from_view(panel, {"type": "search", "text": f"q{v}", "view": f"v{v}"})
    assert wait_until(lambda: "q19" in panel.totals["by_search"])
    assert len(panel.totals["by_search"]) == 1 + panel_inbox._MAX_SEARCHES  # "" and the newest eight
    assert "q0" not in panel.totals["by_search"]
    panel.close()
    assert not panel._totals_worker._thread.is_alive()


def test_a_failing_totals_source_leaves_the_panel_working(panels):
    def broken(_search: str) -> dict[str, Any]:
        raise RuntimeError("the job store is closed")

    panel = panels(totals=broken)
    panel.set_jobs([make_job(1)])
    panel._repr_mimebundle_()  # display still works
    assert panel.totals == {}
    from_view(panel, {"type": "search", "text": "x", "view": "v"})
    assert wait_until(lambda: panel._totals_worker.runs >= 1)
    panel.upsert([make_job(1, progress=50.0)])
    panel.flush()
    assert panel.cards()[make_job(1).job_id]["pct"] == 50.0
