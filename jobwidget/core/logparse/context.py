"""Reading events in context, oldest first: each one gets its role (training figure, auxiliary phase).

A bar's description says what it is; bars without one (Hugging Face Trainer, diffusers pipelines,
ai-toolkit's dimension scan) take the meaning of the context before them: the activity announced last,
the training bar they interrupt (a fresh bar started while the training bar is mid-way is an evaluation
loop), the bar identity already known to be the training one. `Context` holds that state; each event
kind has its handler, and `HANDLERS` maps kinds to handlers.
"""

from __future__ import annotations

from collections.abc import Callable

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


class Context:
    """What the events read so far say about the events that follow."""

    __slots__ = (
        "aux_totals",
        "context_seen",
        "ctx",
        "in_tb",
        "info_epochs",
        "info_total",
        "last_bar",
        "main_certain",
        "main_open",
        "main_total",
        "prev_main",
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
        if ev.dcls == "aux":
            ev.role = R_AUX
            # an unfinished auxiliary bar is the loop the next plain bars run inside
            self.ctx = None if finished else ev.stage
        elif ev.dcls == "train":
            ev.role = R_TRAIN
            self.ctx = None
            self.main_open = not finished
        else:
            self._plain_bar(ev, finished)
        self.context_seen = True
        self.last_bar = ev

    def _plain_bar(self, ev: Event, finished: bool) -> None:
        self.prev_main = (self.main_total, self.main_certain, self.main_open)
        # fresh: auxiliary loops start at 0; a bar resuming mid-way is not one
        stage, certain = self.plain_bar_stage(ev.total, ev.n0 == 0)
        self.trained_since = False
        ev.stage, ev.certain = stage, certain
        if stage == TRAIN:
            ev.role = R_TRAIN
            self.main_total, self.main_certain, self.main_open = ev.total, certain, not finished
            self.ctx = None
        else:
            ev.role = R_AUX
            if ev.total is not None:
                self.aux_totals[ev.total] = stage
            if self.ctx == PRE:
                self.ctx = None  # "caching latents." announces one bar, not the ones after it

    def plain_bar_stage(self, total: int | None, fresh: bool) -> tuple[str, bool]:
        """What a bar without a description is, from its context: (stage, whether the context said so)."""
        main_total = self.main_total
        same_as_main = total is not None and total == main_total
        if (same_as_main and (self.main_certain or self.trained_since)) or (
            total is not None and total == self.info_total
        ):
            return TRAIN, True  # the same bar again, and training logs (loss lines) came in between
        if total is not None and total in self.aux_totals:
            return self.aux_totals[total], True
        if self.ctx is not None and fresh:
            return self.ctx, True  # a loop started right after "caching latents." / "Running Evaluation"
        if same_as_main:
            return TRAIN, False
        if self.main_open or main_total is not None or self.info_total is not None:
            return VAL, True  # a loop run inside training: evaluation or sampling
        return TRAIN, self.context_seen

    def on_mark(self, ev: Event) -> None:
        if ev.stage == TRAIN:
            ev.role = R_TRAIN_MARK
            self.ctx = None
        else:
            ev.role = R_AUX
            self.ctx = ev.stage
        self.context_seen = True

    def on_figure(self, ev: Event) -> None:
        ev.role = R_TRAIN
        self.ctx = None
        self.context_seen = self.trained_since = True

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
            ev.role = R_TRAIN
            ev.epochs = self.info_epochs
            self.ctx = None
            self.trained_since = True
        self.context_seen = True

    def on_info(self, ev: Event) -> None:
        if ev.total is not None:
            self.info_total = ev.total
        if ev.epochs is not None:
            self.info_epochs = ev.epochs
        self.context_seen = True

    def on_loss(self, ev: Event) -> None:
        if self.ctx is None:
            ev.role = R_TRAIN
            self.trained_since = True


HANDLERS: dict[Kind, Callable[[Context, Event], None]] = {
    Kind.BAR: Context.on_bar,
    Kind.FIGURE: Context.on_figure,
    Kind.MARK: Context.on_mark,
    Kind.DICT: Context.on_dict,
    Kind.INFO: Context.on_info,
    Kind.LOSS: Context.on_loss,
    Kind.TRACEBACK: Context.on_traceback,
    Kind.EXCEPTION: Context.on_exception,
}
