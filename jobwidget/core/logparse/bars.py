"""Progress bars: a tqdm or rich redraw read into an event, and what its description says it is.

A bar's description names its phase ("Caching latents", "Generating Images", "Validation DataLoader 0"
are auxiliary; "steps", "Epoch 3/10, Steps", a job name are training). Bars without one take their
meaning from the context (see `context.py`).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from jobwidget.core.logparse.events import BAR, PRE, SAVE, TRAIN, VAL, WARMUP, Event
from jobwidget.core.logparse.patterns import (
    BAR_PREP_OBJECTS,
    EPOCH_ANY,
    EPOCH_ONLY,
    IMAGE_WORDS,
    LOSS_VALUE,
    MAX_LINE,
    N_AT,
    PHASE_TOKEN,
    PRE_WORDS,
    PREFIX,
    RATE,
    RICH,
    SAVE_WORDS,
    TQDM,
    TQDM_PLAIN,
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


def frame_n(line: str, *, first: bool = False) -> int | None:
    """The count of a redraw ("... | 12/28 [") without a full parse: the last frame's, or the first's."""
    p = line.find("%|") if first else line.rfind("%|")
    if p < 0:
        m = TQDM_PLAIN.search(line)
        return to_int(m.group(2)) if m is not None else None
    q = line.find("|", p + 2)
    m = N_AT.match(line, q + 1) if q >= 0 else None
    return int(m.group(1)) if m is not None else None


def last_frame(line: str) -> str:
    """The newest of several redraws glued into one line (a capture that dropped the carriage returns).

    A frame ends with its "]"; the last frame starts right after the "]" that closes the frame before it.
    """
    p = line.rfind("%|")
    q = line.rfind("%|", 0, p) if p > 0 else -1
    if q < 0:
        return line
    close = line.find("]", q, p)
    return line[close + 1 :] if close >= 0 else line


def tqdm_event(line: str) -> Event | None:
    seg = line if len(line) <= MAX_LINE else line[-MAX_LINE:]
    if seg.count("%|") > 1:
        seg = last_frame(seg)
    m = TQDM.search(seg)
    if m is None:
        return None
    ev = Event(BAR)
    ev.line = seg
    before = seg[: m.start()]
    ev.head = before.rstrip(" ")
    ev.tail = seg[m.end(3) : m.end(4) + 1]  # "/28 ": the total and what follows, so 28 never matches 280
    _read_counts(ev, _description(before), m.group(3), m.group(4), m.group(5) or "")
    return ev


def plain_bar_event(line: str) -> Event | None:
    """A tqdm redraw without bar glyphs: "Epoch 1:  50% 1/2 [00:00<00:00, 2.10it/s]", "Validation: | | 0/? [".

    Of several redraws glued into one line, the last is read.
    """
    seg = line if len(line) <= MAX_LINE else line[-MAX_LINE:]
    frames = list(TQDM_PLAIN.finditer(seg))
    if not frames:
        return None
    m: re.Match[str] | None = frames[-1]
    if len(frames) > 1:
        seg = seg[frames[-2].end() :]
        m = TQDM_PLAIN.search(seg)
    if m is None:
        return None
    ev = Event(BAR)
    ev.plain = True
    ev.line = seg
    before = seg[: m.start()]
    ev.head = before.rstrip(" ")
    ev.tail = seg[m.end(2) : m.end(3) + 1]
    _read_counts(ev, _description(before), m.group(2), m.group(3), m.group(4) or "")
    return ev


def _description(before: str) -> str:
    """A bar's description without the log prefix a logger or a capture put before it."""
    desc = before.strip().rstrip(":").strip()
    if desc:
        m = PREFIX.match(desc)
        if m is not None and m.end():
            desc = desc[m.end() :].strip(" -:|>")
    return desc


def _read_counts(ev: Event, desc: str, n_s: str, total_s: str, stats: str) -> None:
    ev.desc = desc
    n, total = to_int(n_s), to_int(total_s)
    ev.n, ev.total = n, total
    if "B/s" in stats or _looks_like_file(desc) or (n is None and total is None):
        # sizes ("1.2G/4.9G", "335M/335M", "MB/s") and file names: downloads and uploads, never steps
        ev.dcls, ev.stage = "aux", aux_stage_for(desc) or PRE
        return
    if total is not None and total <= 0:
        ev.total = None
    _classify_bar(ev, desc)  # a count of unknown total ("300/?") still says which phase runs


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
        elif epochs:
            ev.zero_based = epoch == 0  # "Epoch 0/3": a loop printing its 0-based index
            ev.epochs = epochs
        else:
            # "Epoch 3": Lightning's tqdm bar, counted from 0, with the run's epoch count nowhere in it
            ev.zero_based = True
            ev.epochs = None
        ev.own_epochs = ev.epochs


# ------------------------------------------------------------------------------------------ statistics


def bar_stats(ev: Event) -> tuple[float | None, float | None]:
    """(rate in it/s, seconds remaining) from the newest redraw's statistics."""
    if ev.rich:
        m = RICH.search(ev.line)
        if m is None:
            return None, None
        rate = _float(m.group(5))
        return (rate if rate else None), _seconds(m.group(4))
    _elapsed, remaining, rate = _timing(_stats_of(ev.line, ev.plain))
    return rate, remaining


def started_here(ev: Event) -> bool:
    """Whether a bar ran from 0 in what the log shows: its oldest redraw is at 0, or that redraw is its
    last and its count is what its rate over its elapsed time gives (a fast loop whose only captured
    redraw is "57/57 [00:19<00:00, 2.93it/s]").

    A bar resumed mid-way ("500/750 [00:05<..., 1.00it/s]") or going on after a pause started elsewhere.
    """
    if ev.n0 == 0:
        return True
    if ev.n0 is None or ev.rich or ev.n0 != ev.total:
        return False
    elapsed, _remaining, rate = _timing(_stats_of(ev.oldest, ev.plain))
    return elapsed is not None and rate is not None and ev.n0 <= rate * (elapsed + 1.0) * 1.5 + 1


def ran_briefly(ev: Event, seconds: float) -> bool:
    """Whether the bar's newest redraw shows less than `seconds` elapsed (unknown counts as brief)."""
    if ev.rich:
        return True
    elapsed, _remaining, _rate = _timing(_stats_of(ev.line, ev.plain))
    return elapsed is None or elapsed < seconds


def bar_loss(ev: Event) -> float | None:
    """The training loss in a bar's postfix ("loss=0.0711", "avr_loss=0.1", "loss: 2.104e-01")."""
    if ev.rich:
        m = RICH.search(ev.line)
        tail = m.group(6) if m is not None else ""
    else:
        tail = _stats_of(ev.line, ev.plain)
    low = tail.lower()
    if "loss" not in low:
        return None
    m2 = LOSS_VALUE.search(low[:MAX_LINE])
    if m2 is None:
        return None
    try:
        value = float(m2.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) else math.nan


def _stats_of(line: str, plain: bool) -> str:
    """What a tqdm redraw holds between its brackets: "00:10<00:12, 4.50it/s, loss=0.5"."""
    if plain:
        m = TQDM_PLAIN.search(line)
        return (m.group(4) or "") if m is not None else ""
    m = TQDM.search(line)
    return (m.group(5) or "") if m is not None else ""


def _timing(stats: str) -> tuple[float | None, float | None, float | None]:
    """(elapsed, remaining, rate in it/s) from tqdm statistics; None where unknown ("?")."""
    if not stats:
        return None, None, None
    parts = stats.split(",", 2)
    timing = parts[0]
    elapsed, _, remaining_s = timing.partition("<")
    remaining = _seconds(remaining_s) if remaining_s else None
    rate = None
    if len(parts) > 1:
        rm = RATE.match(parts[1])
        if rm is not None:
            value = _float(rm.group(1))
            if value:
                if rm.group(2):  # "1.25s/it": seconds per iteration
                    rate = round(1.0 / value, 6)
                elif rm.group(4):
                    rate = value
    return _seconds(elapsed), remaining, rate


def _float(s: str | None) -> float | None:
    if not s:
        return None
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds(s: str | None) -> float | None:
    """tqdm/rich intervals ("11:40", "1:02:03", "0:00:12") in seconds; None when unknown ("?")."""
    if not s:
        return None
    s = s.strip()
    if not s or "?" in s or "-" in s:
        return None
    parts = s.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        return None
    total = 0
    for p in parts:
        total = total * 60 + int(p)
    return float(total)
