"""The vocabulary shared by the scanner, the recogniser and the context: stages, event kinds, roles."""

from __future__ import annotations

from enum import Enum

PRE = "Preprocessing"
WARMUP = "Warmup"
TRAIN = "Training"
VAL = "Validation"
SAVE = "Saving checkpoint"
STAGES: tuple[str, ...] = (PRE, WARMUP, TRAIN, VAL, SAVE)


class Kind(Enum):
    """What a recognised line is."""

    BAR = "bar"  # a progress bar redraw (tqdm or rich), or a run of redraws of one bar
    FIGURE = "figure"  # a plain progress line: "step 1500/5000", "epoch 3/10", "step 12 - loss 0.3"
    MARK = "mark"  # an activity statement: "Saving checkpoint ...", "Running training", "Caching latents"
    DICT = "dict"  # a Hugging Face logged dict: {'loss': ..., 'epoch': ...} or {'eval_loss': ...}
    INFO = "info"  # run totals announced before training: "Num Epochs = 3", "Total optimization steps = 500"
    LOSS = "loss"  # any other line carrying a training loss
    TRACEBACK = "traceback"  # "Traceback (most recent call last):"
    EXCEPTION = "exception"  # the "SomeError: message" line that ends a traceback
    END = (
        "end"  # the run says in words that training is over: "Training has completed", "max_steps=N reached"
    )


class Role(Enum):
    """What an event turned out to be once read in context."""

    NONE = "none"  # says nothing about the stage (inside a traceback, a setting, an unknown line)
    TRAIN = "train"  # a training figure (the run's progress)
    AUX = "aux"  # a phase other than training (its own stage)
    TRAIN_MARK = "train-mark"  # says training runs, with no figure ("Running training")


# Module-level aliases: identity tests against these are the hot path's only enum cost.
BAR, FIGURE, MARK, DICT, INFO, LOSS, TRACEBACK, EXCEPTION, END = (
    Kind.BAR,
    Kind.FIGURE,
    Kind.MARK,
    Kind.DICT,
    Kind.INFO,
    Kind.LOSS,
    Kind.TRACEBACK,
    Kind.EXCEPTION,
    Kind.END,
)
R_NONE, R_TRAIN, R_AUX, R_TRAIN_MARK = Role.NONE, Role.TRAIN, Role.AUX, Role.TRAIN_MARK


class Event:
    """One recognised line (or a run of redraws of one bar, kept as its newest redraw).

    Defaults live on the class so that creating an event (hundreds per scan) sets only what it knows.
    """

    kind: Kind
    stage: str | None = None
    role: Role = R_NONE
    certain = True
    desc = ""
    dcls = ""  # bars: "train" | "aux" | "" (no description)
    line = ""
    oldest = ""  # bars: the oldest redraw of the run seen so far
    head = ""  # bars: what every redraw starts with (the description part)
    tail = ""  # bars: the "/total" part every redraw contains
    rich = False
    plain = False  # bars: tqdm without glyphs ("Epoch 1:  50% 1/2 [...]") or of unknown total ("| 0/? [")
    n: int | None = None
    n0: int | None = None
    total: int | None = None
    epoch: float | None = None
    epochs: int | None = None
    own_epochs: int | None = None  # bars: the epoch count the description gave ("Epoch 3/10"), if any
    per_epoch = False
    zero_based = False
    bare = False  # figures: a step count without the run's length ("step 250 - loss 0.12")
    loss: float | None = None
    dict_eval = False
    by_default = False  # bars without description judged Preprocessing only because nothing said training
    after_end = False  # a training figure redrawn after the run said it was over

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    def copy_as_redraw(self, line: str, n: int | None) -> Event:
        """The same bar at another redraw: same description and total, another count."""
        ev = Event(self.kind)
        ev.__dict__.update(self.__dict__)
        ev.line = line
        ev.n = n
        ev.n0 = None
        return ev
