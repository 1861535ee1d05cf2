"""Text lines: activity statements, plain progress figures, logged dicts, run totals, tracebacks.

Only the start of a message counts, after log prefixes are removed, so captions, prompts, config dumps
(`gradient_checkpointing: true`, `lr_warmup_steps=100`), warnings and tracebacks mentioning "checkpoint"
or "warmup" do not move the stage. What a statement's first word means is a table (`_RULES`): each row
is a set of words and the rule that reads the rest of the message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from jobwidget.core.logparse.bars import to_int
from jobwidget.core.logparse.events import (
    DICT,
    END,
    EXCEPTION,
    FIGURE,
    INFO,
    LOSS,
    MARK,
    PRE,
    SAVE,
    TRACEBACK,
    TRAIN,
    VAL,
    WARMUP,
    Event,
)
from jobwidget.core.logparse.patterns import (
    ALL_FIRST,
    CKPT_OBJECTS,
    CONFIG,
    CONTENT_FIRST,
    DICT_EPOCH,
    DICT_STEP,
    EPOCH_ANY,
    EPOCH_AT_START,
    EXC,
    FIG_FIRST,
    GENERATE,
    IDENT_TAIL,
    IMAGE_WORDS,
    LIMIT_REACHED,
    LOSS_VALUE,
    MAX_LINE,
    MID,
    NUM_EPOCHS,
    PERSIST_VERBS,
    PRE_VERBS,
    PRE_WORDS,
    PREFIX,
    PREP_OBJECTS,
    PUNCT,
    RESUME,
    RUN_END,
    SAVE_VERBS,
    START_VERBS,
    STEP_ANY,
    STEP_AT_START,
    STEP_OF_MAX,
    STEP_ONLY,
    TOTAL_STEPS,
    TRAIN_FIRST,
    TRAIN_LOOP,
    TRAIN_REST,
    VAL_VERBS,
    VAL_WORDS,
    WARM_ACTIVITY,
    WARM_DONE,
    WARM_FIRST,
    WARM_SETTING,
    WORD,
)

# ------------------------------------------------------------------------------------ first-word rules
# A rule reads (first word, the rest of the message) and gives the stage the statement announces, or None.
Rule = Callable[[str, str], "str | None"]


def _persisting(word: str, rest: str) -> str | None:
    """Saving or writing: images are validation output, latents and caches preparation, else a save."""
    if IMAGE_WORDS.search(rest):
        return VAL
    if PREP_OBJECTS.search(rest):
        return PRE
    if word in SAVE_VERBS or CKPT_OBJECTS.search(rest):
        return SAVE
    return None


def _starting(word: str, rest: str) -> str | None:
    """A start verb: "Running validation", "Starting training", "Running 10 warmup steps", "Start caching"."""
    if VAL_WORDS.search(rest):
        return VAL
    train = TRAIN_REST.search(rest)
    warm = WARM_ACTIVITY.search(rest)
    if warm is not None and (train is None or warm.start() < train.start()):
        return WARMUP  # "Running warmup before training"; "Starting training with warmup" is training
    if train is not None:
        return TRAIN
    if PRE_WORDS.search(rest[:40]):
        return PRE
    return None


def _generating(word: str, rest: str) -> str | None:
    return VAL if IMAGE_WORDS.search(rest) else PRE


def _resuming(word: str, rest: str) -> str | None:
    return TRAIN if re.match(r"\s*(?:the\s)?(?:training|train)\b", rest) else PRE


def _warming(word: str, rest: str) -> str | None:
    """Warmup as an activity ("Warming up the model", "Warmup step 3/10"), not as a setting ("warmup: 100
    steps", "Warmup ratio 0.03")."""
    if word in ("warm", "warming"):
        if not rest.startswith(("ing", " up", "-up", "up")):
            return None  # "warm start"
        rest = rest[rest.index("up") + 2 :]
    if WARM_SETTING.match(rest):
        return None
    if WARM_DONE.match(rest):
        return TRAIN  # "Warmup complete.": what follows warmup is training
    return WARMUP


def _checkpoint(word: str, rest: str) -> str | None:
    return SAVE if re.search(r"\b(?:saved|written|created)\b", rest) else None


def _always(stage: str) -> Rule:
    return lambda word, rest: stage


_RULES: tuple[tuple[frozenset[str], Rule], ...] = (
    (SAVE_VERBS, _persisting),
    (PERSIST_VERBS, _persisting),
    (VAL_VERBS, _always(VAL)),
    (GENERATE, _generating),
    (START_VERBS, _starting),
    (TRAIN_FIRST, _always(TRAIN)),
    (RESUME, _resuming),
    (WARM_FIRST, _warming),
    # during validation or training, loading inherits that phase (see answer.inherit_pre)
    (PRE_VERBS, _always(PRE)),
    (frozenset({"checkpoint"}), _checkpoint),
)
_END_FIRST = frozenset(
    {"finished", "completed", "done", "ended", "exiting", "exited", "exit", "fine-tuning", "finetuning"}
)
# one lookup per message; the first row naming a word wins
_RULE_BY_WORD: dict[str, Rule] = {w: rule for words, rule in reversed(_RULES) for w in words}


# ------------------------------------------------------------------------------------------ recognise


def message(line: str) -> tuple[str, str]:
    """A line's message without log prefixes and leading punctuation, and its lower-case form."""
    msg, low, _prefix = _split(line)
    return msg, low


def _split(line: str) -> tuple[str, str, str]:
    """(message, its lower-case form, the log prefix before it)."""
    s = line if len(line) <= MAX_LINE else line[:MAX_LINE]
    m = PREFIX.match(s)
    cut = m.end() if m is not None else 0
    msg = s[cut:].lstrip(PUNCT)
    return msg, msg.lower(), s[:cut]


def text_event(line: str) -> Event | None:
    """The event a non-bar line is, or None when it says nothing about the run."""
    s = line.strip()
    head = s[:2]
    if head in ("{'", '{"'):
        return _dict_event(s)
    msg, low, prefix = _split(s)
    if not low:
        return None
    if msg[:2] in ("{'", '{"') and prefix:
        return _dict_event(msg)  # "(RayTrainWorker pid=12) {'loss': 0.5, 'epoch': 1.0}"
    if ("Error" in msg or "Exception" in msg or "Interrupt" in msg or "Exit" in msg) and EXC.match(msg):
        return Event(EXCEPTION)
    if low.startswith("traceback (most recent call last)"):
        return Event(TRACEBACK)
    ev = _statement(low)
    if (ev is None or ev.stage in (VAL, PRE)) and "loop" in s and _names_training_loop(prefix, low):
        # "(training-loop) Predicting.": a debug logger named for the training loop speaks from inside it
        ev = Event(MARK)
        ev.stage = TRAIN
    if ev is None and "loss" in low:
        loss = find_loss(low)
        if loss is not None:
            ev = Event(LOSS)
            ev.loss = loss
    if ev is None and ("epoch" in low or "steps" in low) and ("=" in low or ":" in low):
        ev = _info_event(low)
    return ev


def _names_training_loop(prefix: str, low: str) -> bool:
    return TRAIN_LOOP.search(prefix.lower()) is not None or TRAIN_LOOP.search(low[:200]) is not None


def _statement(low: str) -> Event | None:
    """A figure line or an activity statement, read from the message's first word."""
    wm = WORD.match(low)
    word = wm.group(0) if wm is not None else ""
    rest = low[len(word) : len(word) + 160]
    if word in CONTENT_FIRST or IDENT_TAIL.match(rest):
        word = ""  # an identifier, a call or quoted content ("warmup_ratio", "save(", "prompt: ...")
    if word in FIG_FIRST:
        ev = _figure_event(low)
        if ev is not None:
            return ev
    if word in TRAIN_FIRST or word in _END_FIRST:
        em = RUN_END.match(low)
        if em is not None:  # "Training has completed.", "Finished training", "Exiting training loop"
            end = Event(END)
            rest_ev = _statement(low[em.end() :].lstrip(" :.,;-"))
            if rest_ev is not None and rest_ev.kind is MARK and rest_ev.stage != TRAIN:
                end.stage = rest_ev.stage  # "Done training: packaging trained_model.tar" is a save
            return end
    elif "reached" in low and LIMIT_REACHED.search(low):
        return Event(END)  # "`Trainer.fit` stopped: `max_epochs=10` reached."
    if word and word in ALL_FIRST and CONFIG.match(low):
        return None  # "warmup_steps: 100", "Num Epochs = 3", "save_every=250": settings, not activity
    rule = _RULE_BY_WORD.get(word)
    stage = rule(word, rest) if rule is not None else None
    if stage is None and (
        "sav" in low or "valid" in low or "eval" in low or "generat" in low or "training" in low
    ):
        stage = _mid_line_stage(low)
    if stage is None:
        return None
    ev = Event(MARK)
    ev.stage = stage
    if stage == TRAIN and "loss" in low:
        ev.loss = find_loss(low)
    return ev


def _mid_line_stage(low: str) -> str | None:
    m = MID.search(low)
    if m is not None:
        phrase = m.group(0)
        if phrase.startswith(("saving", "model", "checkpoint", "state", "weights", "lora")):
            return SAVE
        return TRAIN if phrase.endswith("training") else VAL
    if re.search(r"\b(?:saved|written) (?:in|to|at)\b", low):
        if IMAGE_WORDS.search(low):
            return VAL
        if PREP_OBJECTS.search(low):
            return PRE
        if CKPT_OBJECTS.search(low) or "config" in low or "tokenizer" in low:
            return SAVE
    return None


def _figure_event(low: str) -> Event | None:
    """Plain progress lines: "step 1500/5000", "Epoch 3/10", "[Epoch 2/10][Step 150/1000] loss=0.3",
    the final "global_step = 1000, max_train_steps = 1000", and "step 250 - loss 0.12" (no total)."""
    fm = STEP_OF_MAX.match(low)
    if fm is not None:
        n, total = int(fm.group(1)), int(fm.group(2))
        if total <= 0:
            return None
        ev = Event(FIGURE)
        ev.n, ev.total = min(n, total), total
        return ev
    sm = STEP_AT_START.match(low)
    em = EPOCH_AT_START.match(low)
    if sm is None and em is None:
        return _bare_step(low)
    if sm is None:
        sm = STEP_ANY.search(low, em.end()) if em is not None else None
    if em is None:
        em = EPOCH_ANY.search(low, sm.end()) if sm is not None else None
    ev = Event(FIGURE)
    if sm is not None:
        n, total = int(sm.group(1)), int(sm.group(2))
        if total > 0 and n <= total:
            ev.n, ev.total = n, total
    if em is not None:
        e, epochs = int(em.group(1)), int(em.group(2))
        if epochs > 0 and e <= epochs:
            ev.epoch, ev.epochs = float(e), epochs
    if ev.total is None and ev.epochs is None:
        return None
    if "loss" in low:
        ev.loss = find_loss(low)
    return ev


def _bare_step(low: str) -> Event | None:
    """A step count with a training loss and no total: training, whose length the header may give."""
    if "loss" not in low:
        return None  # "steps: 1000" alone is a setting
    m = STEP_ONLY.match(low)
    if m is None:
        return None
    loss = find_loss(low)
    if loss is None:
        return None
    ev = Event(FIGURE)
    ev.n = int(m.group(1))
    ev.loss = loss
    ev.bare = True
    ev.certain = False  # until a total is known
    return ev


def _dict_event(s: str) -> Event | None:
    """Hugging Face Trainer's logged dicts: training logs, evaluation results, the final summary."""
    low = s[:MAX_LINE].lower()
    is_eval = "'eval_" in low or '"eval_' in low or "'val_" in low or '"val_' in low
    sm = DICT_STEP.search(low) if not is_eval and "step" in low else None
    if not is_eval and "loss" not in low and "'epoch'" not in low and '"epoch"' not in low and sm is None:
        return None
    ev = Event(DICT)
    ev.dict_eval = is_eval
    if not is_eval:
        ev.loss = find_loss(low)
    if sm is not None:
        ev.n = int(sm.group(1))
        total = int(sm.group(2)) if sm.group(2) else None
        ev.total = total if total and ev.n <= total else None
        ev.bare = ev.total is None
    m = DICT_EPOCH.search(low)
    if m is not None:
        try:
            ev.epoch = float(m.group(1))
        except ValueError:
            ev.epoch = None
    return ev


def _info_event(low: str) -> Event | None:
    """Run totals announced before training ("Num Epochs = 3", "Total optimization steps = 1,000")."""
    m1 = NUM_EPOCHS.search(low)
    m2 = TOTAL_STEPS.search(low)
    if m1 is None and m2 is None:
        return None
    ev = Event(INFO)
    if m1 is not None:
        ev.epochs = to_int(m1.group(1))
    if m2 is not None:
        ev.total = to_int(m2.group(1))
    return ev


def find_loss(low: str) -> float | None:
    """The first training loss on a line; NaN when it diverged ("loss=nan"), None when there is none."""
    m = LOSS_VALUE.search(low[:MAX_LINE])
    if m is None:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) else math.nan
