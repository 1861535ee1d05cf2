"""The answer, read from the newest events once each has its role: stage, progress, training figures.

Progress comes from the newest training figure (`n/total`, never tqdm's rounded percentage), so during
validation or a checkpoint save it stays at the last training figure. `Result.settled` says whether
older lines could still change the answer (the scanner stops reading when they cannot).
"""

from __future__ import annotations

import math

from jobwidget.core.logparse.bars import bar_loss, bar_progress, bar_stats
from jobwidget.core.logparse.events import (
    BAR,
    DICT,
    END,
    FIGURE,
    LOSS,
    PRE,
    R_NONE,
    R_TRAIN,
    R_TRAIN_MARK,
    SAVE,
    TRAIN,
    VAL,
    WARMUP,
    Event,
)


class Result:
    __slots__ = ("eta", "loss", "loss_nan", "progress", "rate", "settled", "stage", "step", "total")

    def __init__(self) -> None:
        self.stage: str | None = None
        self.progress: float | None = None
        self.step: int | None = None
        self.total: int | None = None
        self.rate: float | None = None
        self.eta: float | None = None
        self.loss: float | None = None
        self.loss_nan = False  # the newest training loss was NaN or inf (`loss` is then None)
        self.settled = False


def answer(events: list[Event]) -> Result:
    """Stage, progress and figures from events (oldest first) whose roles are set."""
    res = Result()
    stage_settled, stage_idx = _stage(res, events)
    # progress: the newest training figure (step-level preferred to epoch-level)
    fig_ev: Event | None = None
    epoch_fig: float | None = None
    newest_train: Event | None = None
    loss: float | None = None
    for i in range(len(events) - 1, -1, -1):
        ev = events[i]
        if ev.role is not R_TRAIN:
            if ev.role is R_TRAIN_MARK and loss is None and fig_ev is None:
                loss = ev.loss  # "Train Epoch: 3 [1280/60000 (2%)]  Loss: 0.301"
            continue
        if newest_train is None:
            newest_train = ev
        kind = ev.kind
        if loss is None:
            loss = ev.loss if kind is not BAR else bar_loss(ev)
        if kind is BAR:
            if fig_ev is None and bar_progress(ev) is not None:
                fig_ev = ev
        elif kind is FIGURE:
            if ev.total is not None:
                if fig_ev is None:
                    fig_ev = ev
            elif epoch_fig is None and ev.epochs:
                epoch_fig = 100.0 * (ev.epoch or 0.0) / ev.epochs
        elif kind is END:
            if fig_ev is None:
                fig_ev = ev  # "Training has completed.": 100 % whatever the last frame drawn said
        elif kind is DICT:
            if ev.n is not None and ev.total:
                if fig_ev is None:
                    fig_ev = ev  # {'loss': ..., 'global_step/max_steps': '10/222'}
            elif epoch_fig is None and ev.epoch is not None and ev.epochs:
                epoch_fig = 100.0 * ev.epoch / ev.epochs
        if fig_ev is not None and loss is not None:
            break
    # the newest loss, even when it diverged: a stale finite value would hide a NaN run
    res.loss = loss if loss is not None and math.isfinite(loss) else None
    res.loss_nan = loss is not None and not math.isfinite(loss)
    certain = True
    if fig_ev is not None:
        certain = fig_ev.certain
        if fig_ev.kind is BAR:
            _fill_from_bar(res, fig_ev)
        elif fig_ev.kind is END:
            res.progress, res.eta = 100.0, 0.0
            res.step, res.total = fig_ev.n, fig_ev.total
        else:
            res.progress = _clamp(_fig_progress(fig_ev) if fig_ev.kind is FIGURE else _dict_progress(fig_ev))
            res.step, res.total = fig_ev.n, fig_ev.total
    elif epoch_fig is not None:
        res.progress = _clamp(epoch_fig)
    # settled: later chunks (older lines) cannot change the answer any more
    if not stage_settled:
        res.settled = False
    elif res.progress is not None:
        res.settled = certain
    elif res.stage == PRE:
        res.settled = True
    elif res.stage == TRAIN and newest_train is not None and stage_idx >= 0:
        res.settled = newest_train.certain
    else:
        res.settled = False
    return res


def _stage(res: Result, events: list[Event]) -> tuple[bool, int]:
    """Set the stage from the newest event that has one: (whether it is settled, that event's index).

    An auxiliary "loading/caching" phase after training began belongs to whatever phase it serves
    (validation, training), found further back.
    """
    for i in range(len(events) - 1, -1, -1):
        ev = events[i]
        if ev.role is R_NONE or ev.kind is LOSS:
            continue
        stage: str | None
        if ev.kind is END:
            stage = ev.stage or TRAIN  # "Done training: packaging trained_model.tar" is a save
        elif ev.role is R_TRAIN or ev.role is R_TRAIN_MARK:
            stage = TRAIN
        else:
            stage = ev.stage
        if stage is None:
            continue
        if stage == PRE:
            res.stage, settled = _inherit_pre(events, i)
            return settled, i
        res.stage = stage
        return True, i
    return False, -1


def _inherit_pre(events: list[Event], i: int) -> tuple[str, bool]:
    """Loading or caching after training began serves the phase around it; before, it is Preprocessing."""
    for j in range(i - 1, -1, -1):
        ev = events[j]
        if ev.role is R_TRAIN_MARK:
            # "Running training" alone does not mean training has begun; "Training completed" after
            # training steps does
            if any(e.role is R_TRAIN for e in events[:j]):
                return TRAIN, True
            continue
        if ev.role is R_NONE or ev.kind is LOSS:
            continue
        if ev.role is R_TRAIN:
            return TRAIN, True
        if ev.stage in (VAL, SAVE, WARMUP):
            return ev.stage, True
    return PRE, False


def _clamp(p: float | None) -> float | None:
    if p is None or not math.isfinite(p):
        return None
    return round(min(100.0, max(0.0, p)), 6)


def _fig_progress(ev: Event) -> float | None:
    """A plain line's figure: steps of the run, or steps within an epoch when they disagree with it."""
    n, total = ev.n, ev.total
    if n is None or not total:
        return None
    frac = n / total
    if ev.epoch is not None and ev.epochs:
        e, epochs = ev.epoch, ev.epochs
        lo, hi = (e - 1) / epochs, e / epochs
        if not (lo - 0.02 <= frac <= hi + 0.02):  # "Epoch 2/10 Step 50/100": steps within the epoch
            return 100.0 * ((e - 1) + frac) / epochs
    return 100.0 * frac


def _dict_progress(ev: Event) -> float | None:
    return 100.0 * ev.n / ev.total if ev.n is not None and ev.total else None


def _fill_from_bar(res: Result, ev: Event) -> None:
    if ev.after_end:  # the finished bar drawn again after the run said it was over
        res.progress, res.step, res.total, res.eta = 100.0, ev.total, ev.total, 0.0
        return
    res.progress = _clamp(bar_progress(ev))
    n, total = ev.n, ev.total
    rate, remaining = bar_stats(ev)
    res.rate = rate
    if not ev.per_epoch:
        res.step, res.total = n, total
        res.eta = remaining
    elif ev.epoch is not None and ev.epochs and n is not None and total:
        idx = int(ev.epoch if ev.zero_based else ev.epoch - 1)
        res.step = max(0, idx) * total + n
        res.total = ev.epochs * total
        if rate:
            res.eta = round(max(0, res.total - res.step) / rate, 1)
