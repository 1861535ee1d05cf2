"""Progress bars: a tqdm or rich redraw read into an event, and what its description says it is.

A bar's description names its phase ("Caching latents", "Generating Images", "Validation DataLoader 0"
are auxiliary; "steps", "Epoch 3/10, Steps", a job name are training). Bars without one take their
meaning from the context (see `context.py`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from jobwidget.core.logparse.events import BAR, PRE, SAVE, TRAIN, VAL, WARMUP, Event
from jobwidget.core.logparse.patterns import (
    BAR_PREP_OBJECTS,
    EPOCH_ANY,
    EPOCH_ONLY,
    IMAGE_WORDS,
    MAX_LINE,
    N_AT,
    PHASE_TOKEN,
    PRE_WORDS,
    RICH,
    SAVE_WORDS,
    TQDM,
    VAL_WORDS,
    WARM_WORDS,
)


def to_int(s: str | None) -> int | None:
    """A count as printed ("1,000" included); None for sizes, floats and absurd lengths."""
    if not s:
        return None
    if not s.isdigit():
        s = s.replace(",", "")
        if not s.isdigit():
            return None
    return int(s) if len(s) <= 12 else None


def frame_n(line: str) -> int | None:
    """The count of a redraw ("... | 12/28 [") without a full parse."""
    p = line.find("%|")
    q = line.find("|", p + 2) if p >= 0 else -1
    m = N_AT.match(line, q + 1) if q >= 0 else None
    return int(m.group(1)) if m is not None else None


def tqdm_event(line: str) -> Event | None:
    seg = line if len(line) <= MAX_LINE else line[-MAX_LINE:]
    m = TQDM.search(seg)
    if m is None:
        return None
    ev = Event(BAR)
    ev.line = seg
    before = seg[: m.start()]
    desc = before.strip().rstrip(":").strip()
    ev.desc = desc
    ev.head = before.rstrip(" ")
    ev.tail = seg[m.end(3) : m.end(4) + 1]  # "/28 ": the total and what follows, so 28 never matches 280
    n, total = to_int(m.group(3)), to_int(m.group(4))
    ev.n, ev.total = n, total
    stats = m.group(5) or ""
    if "B/s" in stats or _looks_like_file(desc) or (n is None and total is None):
        # sizes ("1.2G/4.9G", "335M/335M", "MB/s") and file names: downloads and uploads, never steps
        ev.dcls, ev.stage = "aux", aux_stage_for(desc) or PRE
        return ev
    if total is not None and total <= 0:
        ev.total = None
    _classify_bar(ev, desc)  # a count of unknown total ("300/?") still says which phase runs
    return ev


def rich_event(line: str) -> Event | None:
    seg = line if len(line) <= MAX_LINE else line[-MAX_LINE:]
    m = RICH.search(seg)
    if m is None:
        return None
    ev = Event(BAR)
    ev.rich = True
    ev.line = seg
    desc = seg[: m.start()].strip()
    ev.desc = desc
    ev.n, ev.total = to_int(m.group(1)), to_int(m.group(2))
    if ev.total is not None and ev.total <= 0:
        ev.total = None
    _classify_bar(ev, desc)  # "45/--" (an iterable without length) still says which phase runs
    return ev


def bar_progress(ev: Event) -> float | None:
    """The percent of the run a training bar shows; None when the run's length is not known."""
    n, total = ev.n, ev.total
    if n is None or not total:
        return None
    frac = min(1.0, n / total)
    if not ev.per_epoch:
        return 100.0 * frac
    if ev.epoch is None or not ev.epochs:
        return None  # "Epoch 3: 45%|...": the run's length is not in the log
    idx = ev.epoch if ev.zero_based else ev.epoch - 1
    return 100.0 * (max(0.0, idx) + frac) / ev.epochs


def _looks_like_file(desc: str) -> bool:
    return bool(desc) and " " not in desc and bool(re.search(r"\.[A-Za-z][\w]{0,11}$", desc))


@lru_cache(maxsize=512)
def _desc_meaning(desc: str) -> tuple[str, str | None, bool, int | None, int | None]:
    """What a bar description says: (class, stage, counts the whole run, epoch, epochs)."""
    low = desc.lower()
    if not low:
        return "", None, True, None, None
    aux = aux_stage_for(desc)
    if aux is not None:
        return "aux", aux, False, None, None
    m = EPOCH_ANY.search(low)
    epoch: int | None = None
    epochs: int | None = None
    if m is not None:
        epoch, epochs = int(m.group(1)), int(m.group(2))
    else:
        m1 = EPOCH_ONLY.search(low)
        if m1 is not None:
            epoch = int(m1.group(1))
    counts_run = epoch is None or bool(re.search(r"step|iter|\bit\b", low))
    return "train", TRAIN, counts_run, epoch, epochs


def aux_stage_for(desc: str) -> str | None:
    """The stage an auxiliary bar (or phrase) belongs to, or None when it reads as training."""
    low = desc.lower().strip()
    if not low:
        return None
    if " " not in low and not PHASE_TOKEN.match(low):
        # One token that is not a phase word names the run ("flux_train_replicate", "steps", "lora-v2").
        return None
    if VAL_WORDS.search(low):
        if "generat" in low and not IMAGE_WORDS.search(low):
            return PRE
        return VAL
    if WARM_WORDS.search(low):
        return WARMUP
    if SAVE_WORDS.search(low) and not BAR_PREP_OBJECTS.search(low):
        return SAVE
    if PRE_WORDS.search(low):
        return PRE
    return None


def _classify_bar(ev: Event, desc: str) -> None:
    dcls, stage, counts_run, epoch, epochs = _desc_meaning(desc)
    ev.dcls, ev.stage = dcls, stage
    if dcls != "train":
        return
    if not counts_run:
        ev.per_epoch = True
        ev.epoch = float(epoch) if epoch is not None else None
        if ev.rich:
            ev.zero_based = True  # Lightning counts from 0 and shows max_epochs - 1: "Epoch 3/9" is 4th of 10
            ev.epochs = epochs + 1 if epochs is not None and epochs >= 0 else None
        else:
            ev.zero_based = epoch == 0  # "Epoch 0/3": a loop printing its 0-based index
            ev.epochs = epochs if epochs else None
