"""Reading events in context, oldest first: each one gets its role (training figure, auxiliary phase).

A bar's description says what it is; bars without one (Hugging Face Trainer, diffusers pipelines,
ai-toolkit's dimension scan) take the meaning of the context before them: the activity announced last,
the training bar they interrupt (a fresh bar started while the training bar is mid-way is an evaluation
loop), the bar identity already known to be the training one. `Context` holds that state; each event
kind has its handler, and `HANDLERS` maps kinds to handlers.
"""

from __future__ import annotations

from collections.abc import Callable

from jobwidget.core.logparse.bars import ran_briefly, started_here
from jobwidget.core.logparse.events import (
    BAR,
    EXCEPTION,
    PRE,
    R_AUX,
    R_NONE,
    R_TRAIN,
    R_TRAIN_MARK,
    TRACEBACK,
    TRAIN,
    VAL,
    Event,
    Kind,
)

_BRIEF = 120.0  # seconds: a loop this short before any sign of training is preparation


class Context:
    """What the events read so far say about the events that follow."""

    __slots__ = (
        "aux_totals",
        "context_seen",
        "ctx",
        "ended",
        "in_tb",
        "info_epochs",
        "info_total",
        "last_bar",
        "main_certain",
        "main_open",
        "main_total",
        "prev_main",
        "train_seen",
        "train_total",
        "trained_since",
    )

    def __init__(self) -> None:
        self.ctx: str | None = None  # the auxiliary phase under way (None: training, or nothing known)
        self.main_total: int | None = None  # total of the description-less bar known to be training
        self.main_certain = False
        self.main_open = False  # a training bar is mid-way (a fresh bar now is nested: an evaluation loop)
        self.aux_totals: dict[int, str] = {}  # description-less auxiliary bars seen, by total
        self.info_total: int | None = None
        self.info_epochs: int | None = None
        self.context_seen = False  # anything before that says what a description-less bar is
        self.trained_since = False  # a training log line (loss dict, "step n/N") since the last plain bar
        self.train_seen = False  # anything so far said training runs (before it: loading and preparation)
        self.train_total: int | None = None  # the run's length in steps, as the newest figure gave it
        self.ended = False  # the run said in words that training is over
        self.in_tb = False
        self.last_bar: Event | None = None
        self.prev_main: tuple[int | None, bool, bool] = (None, False, False)

    def read(self, events: list[Event]) -> None:
        """Give each event (oldest first) its role."""
        handlers = HANDLERS
        for ev in events:
            ev.role = R_NONE
            kind = ev.kind
            if self.in_tb and kind is not BAR and kind is not TRACEBACK and kind is not EXCEPTION:
                continue  # "checkpoint.py", "save_checkpoint(model)": frames of a traceback say nothing
            handlers[kind](self, ev)

    # ------------------------------------------------------------------------------------- handlers

    def on_traceback(self, ev: Event) -> None:
        self.in_tb = True

    def on_exception(self, ev: Event) -> None:
        self.in_tb = False

    def on_bar(self, ev: Event) -> None:
        self.in_tb = False
        finished = ev.n is not None and ev.total is not None and ev.n >= ev.total
        ev.after_end = False
        if ev.dcls == "aux":
            ev.role = R_AUX
            # an unfinished auxiliary bar is the loop the next plain bars run inside
            self.ctx = None if finished else ev.stage
        elif ev.dcls == "train":
            ev.role = R_TRAIN
            self.ctx = None
            self.main_open = not finished
            self._training_bar(ev)
        else:
            self._plain_bar(ev, finished)
        self.context_seen = True
        self.last_bar = ev

    def _training_bar(self, ev: Event) -> None:
        """A bar read as the training bar: the run's length, and what an epoch count says of it."""
        self.train_seen = True
        if ev.per_epoch:
            if ev.own_epochs is None:
                # "Epoch 3" (counted from 0) of a run whose epoch count only the header gave
                epochs, epoch = self.info_epochs, ev.epoch
                ev.epochs = epochs if epochs and epoch is not None else None
                ev.zero_based = ev.epochs is None or (epoch is not None and epoch < ev.epochs)
        elif ev.total:
            if self.ended and ev.total == self.train_total and ev.n is not None and ev.n >= 0.99 * ev.total:
                ev.after_end = True  # the finished bar drawn once more as it closes
            self.train_total = ev.total

    def _plain_bar(self, ev: Event, finished: bool) -> None:
        self.prev_main = (self.main_total, self.main_certain, self.main_open)
        stage, certain = self.plain_bar_stage(ev, finished)
        self.trained_since = False
        ev.stage, ev.certain = stage, certain
        ev.by_default = stage == PRE and not certain
        if stage == TRAIN:
            ev.role = R_TRAIN
            self.main_total, self.main_certain, self.main_open = ev.total, certain, not finished
            self.ctx = None
            self._training_bar(ev)
        else:
            ev.role = R_AUX
            if ev.total is not None:
                self.aux_totals[ev.total] = stage
            if self.ctx == PRE:
                self.ctx = None  # "caching latents." announces one bar, not the ones after it

    def plain_bar_stage(self, ev: Event, finished: bool) -> tuple[str, bool]:
        """What a bar without a description is, from its context: (stage, whether the context said so)."""
        total = ev.total
        main_total = self.main_total
        same_as_main = total is not None and total == main_total
        if (same_as_main and (self.main_certain or self.trained_since)) or (
            total is not None and total == self.info_total
        ):
            return TRAIN, True  # the same bar again, and training logs (loss lines) came in between
        if total is not None and total in self.aux_totals:
            return self.aux_totals[total], True
        if self.ctx == PRE and not self.train_seen:
            return PRE, True  # before training, the loop "caching latents..." announced, caught mid-way
        if self.ctx is not None and started_here(ev):
            # a loop started right after "caching latents." / "Running Evaluation" (a bar resuming
            # mid-way is not one, nor the training bar going on after a save)
            return self.ctx, True
        if same_as_main:
            return TRAIN, False
        if self.main_open or main_total is not None or self.info_total is not None:
            return VAL, True  # a loop run inside training: evaluation or sampling
        if not self.train_seen and (
            (finished and ran_briefly(ev, _BRIEF)) or (total is not None and total <= 1)
        ):
            # nothing has said training runs: a loop that finished within minutes (a quantization or
            # size-scan pass) or a one-item loop ("0/1", a process index) belongs to loading
            return PRE, False
        return TRAIN, self.context_seen

    def on_mark(self, ev: Event) -> None:
        if ev.stage == TRAIN:
            ev.role = R_TRAIN_MARK
            self.ctx = None
            self.train_seen = True
        else:
            ev.role = R_AUX
            self.ctx = ev.stage
        self.context_seen = True

    def on_figure(self, ev: Event) -> None:
        ev.role = R_TRAIN
        self.ctx = None
        self.context_seen = self.trained_since = self.train_seen = True
        if ev.bare:
            # "step 250 - loss 0.12": the run's length from the header or the training bar
            total = self.info_total or self.train_total
            ev.total = total if total is not None and ev.n is not None and ev.n <= total else None
            ev.certain = ev.total is not None
        if ev.total:
            self.train_total = ev.total

    def on_end(self, ev: Event) -> None:
        """The run said training is over: 100 %, newer than any bar frame drawn before."""
        self._take_back_default_bar()
        ev.role = R_TRAIN
        ev.n = ev.total = self.train_total
        self.ctx = None
        self.main_open = False
        self.context_seen = self.train_seen = self.ended = True

    def on_dict(self, ev: Event) -> None:
        if ev.dict_eval:
            ev.role = R_AUX
            ev.stage = VAL
            lb = self.last_bar
            prev_total = self.prev_main[0]
            if (
                lb is not None
                and lb.dcls == ""
                and lb.role is R_TRAIN
                and lb.n0 == 0
                and lb.n == lb.total
                and prev_total is not None
                and lb.total != prev_total
            ):
                # the bar that just finished was the evaluation loop, not training: take it back
                lb.role, lb.stage = R_AUX, VAL
                self.main_total, self.main_certain, self.main_open = self.prev_main
                if lb.total is not None:
                    self.aux_totals[lb.total] = VAL
            self.ctx = None
        else:
            self._take_back_default_bar()
            ev.role = R_TRAIN
            ev.epochs = self.info_epochs
            if ev.bare:  # {'loss': ..., 'step': 120}: the run's length from the header
                total = self.info_total or self.train_total
                ev.total = total if total is not None and ev.n is not None and ev.n <= total else None
            if ev.total:
                self.train_total = ev.total
            self.ctx = None
            self.trained_since = self.train_seen = True
        self.context_seen = True

    def _take_back_default_bar(self) -> None:
        """A training log ({'train_runtime': ...}, "Training completed") right after a finished bar that
        was read as preparation only for want of anything saying training ran: that bar was training."""
        lb = self.last_bar
        if lb is None or not lb.by_default or lb.role is not R_AUX or self.train_seen:
            return
        lb.role, lb.stage, lb.certain, lb.by_default = R_TRAIN, TRAIN, True, False
        self.main_total, self.main_certain, self.main_open = lb.total, True, False
        if lb.total is not None:
            self.aux_totals.pop(lb.total, None)
            self.train_total = lb.total

    def on_info(self, ev: Event) -> None:
        if ev.total is not None:
            self.info_total = ev.total
            self.train_total = ev.total
            self.train_seen = True
        if ev.epochs is not None:
            self.info_epochs = ev.epochs
        self.context_seen = True

    def on_loss(self, ev: Event) -> None:
        if self.ctx is None:
            ev.role = R_TRAIN
            self.trained_since = self.train_seen = True


HANDLERS: dict[Kind, Callable[[Context, Event], None]] = {
    Kind.BAR: Context.on_bar,
    Kind.FIGURE: Context.on_figure,
    Kind.MARK: Context.on_mark,
    Kind.DICT: Context.on_dict,
    Kind.INFO: Context.on_info,
    Kind.LOSS: Context.on_loss,
    Kind.TRACEBACK: Context.on_traceback,
    Kind.EXCEPTION: Context.on_exception,
    Kind.END: Context.on_end,
}
