"""Inline progress from a training log's tail: stage, percent of the run, last line (pure, no I/O).

Real trainer logs are a mix of tqdm redraws (one line per redraw once Replicate captures them, or several
`\\r`-joined in one line), logger lines with timestamps and levels, config dumps, captions, sample prompts
and tracebacks. Several bars share a run: weight downloads, checkpoint shards, captioning, latent caching,
the training bar, validation image generation, evaluation loops. Only the training bar is the run's
progress, so the parser works in two steps:

1. *Recognise* each line, with no trainer-specific regexes: a general tqdm bar
   (`desc: NN%|bar| n/total [elapsed<remaining, rate, postfix]`, description optional), Lightning's rich
   bar (`Epoch 3/9 ━━━━ 45/100 0:00:10 • 0:00:12 4.50it/s ...`), plain `step n/N` / `epoch e/E` lines,
   Hugging Face `{'loss': ..., 'epoch': ...}` dicts, and *activity statements* (a line whose message
   starts with a verb such as "Saving", "Caching", "Generating ... images", "Running training"). Only the
   start of a message counts, after log prefixes are removed, so captions, prompts, config dumps
   (`gradient_checkpointing: true`, `lr_warmup_steps=100`), warnings and tracebacks mentioning
   "checkpoint" or "warmup" do not move the stage.
2. *Classify in context*: a bar's description says what it is ("Caching latents", "Generating Images",
   "Validation DataLoader 0" are auxiliary; "steps", "Epoch 3/10, Steps", a job name are training). Bars
   without a description (Hugging Face Trainer, diffusers pipelines, ai-toolkit's dimension scan) take the
   meaning of the context before them: the activity announced last, the training bar they interrupt
   (a fresh bar started while the training bar is mid-way is an evaluation loop), the bar identity
   already known to be the training one.

Progress comes from the newest training figure (`n/total`, never tqdm's rounded percentage), so during
validation or a checkpoint save it stays at the last training figure.

Only the tail is read, newest line first: 16 KiB, then chunks four times larger, never more than
`MAX_SCAN` characters, and reading stops as soon as the answer cannot change any more (usually at the
last line: a training redraw settles it). Redraws of the bar being read are skipped with two substring
tests, so even a long validation phase that hides the last training redraw costs little, and the cost
never grows with the log's length. Nothing splits or scans the whole text.

Values: `stage` is one of `STAGES` or None; `progress` is a percent of the whole run in [0, 100] or None
(Lightning's tqdm bar "Epoch 3: 45%" is an epoch's share, and the run's epoch count is not in the log);
`step`/`total_steps` are the run's (for "Epoch e/E" bars: e x batches + n of E x batches); `rate` is in
iterations per second (tqdm's "s/it" inverted); `eta_seconds` is the bar's remaining time; `loss` is the
newest training loss (never eval/val loss), None when it is NaN/inf rather than an older finite value.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from jobwidget.core.models import InlineProgress

__all__ = ["MAX_SCAN", "STAGES", "parse_logs"]

PRE = "Preprocessing"
WARMUP = "Warmup"
TRAIN = "Training"
VAL = "Validation"
SAVE = "Saving checkpoint"
STAGES: tuple[str, ...] = (PRE, WARMUP, TRAIN, VAL, SAVE)

MAX_SCAN = 1 << 20  # characters read back from the end, at most, whatever the log's length
_FIRST_CHUNK = 16 * 1024
_MAX_LINE = 4096  # a line is classified on its first (or, for bars, last) 4 KiB
_MAX_CARRY = 64 * 1024  # a partial line longer than this is taken as it is (its start is out of reach)
_TEXT_BUDGET = 64 * 1024  # plain text read back at most (bar redraws, cheap to skip, are not counted)
_LAST_LOG_MAX = 80
_STRICT = False  # tests set it to see internal errors instead of the defensive fallback

# --------------------------------------------------------------------------------------------- regexes
# Every pattern is anchored or built from bounded / negated classes with distinct terminators, and the bar
# patterns only start where a run of digits or bar glyphs starts (look-behind) and never give back what a
# possessive run took, so matching stays linear in the line's length whatever the input.

_ANSI = re.compile(
    r"\x1b\[[0-?]{0,64}[ -/]{0,16}[@-~]"  # CSI (colours, cursor moves)
    r"|\x1b\][^\x07\x1b]{0,4096}(?:\x07|\x1b\\)?"  # OSC (titles, hyperlinks)
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|\x9b[0-?]{0,64}[ -/]{0,16}[@-~]"  # 8-bit CSI
)
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# tqdm's default `{l_bar}{bar}{r_bar}`: "{desc}: {pct:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{stats}]".
_TQDM = re.compile(
    r"(?<![\d.])(\d{1,3})(?:\.\d{1,3})?%\|([^|\n]{0,512}+)\|\s{0,8}"
    r"(\d[\d.,]{0,20}[a-zA-Z]{0,3})\s{0,4}/\s{0,4}(\d[\d.,]{0,20}[a-zA-Z]{0,3}|\?)"
    r"\s{0,8}(?:\[([^\]\n]{0,512})\]?)?"
)
# Lightning's RichProgressBar: "Epoch 3/9  ━━━━╸━━━ 45/100 0:00:10 • 0:00:12 4.50it/s v_num: 0 loss: 0.5".
_RICH = re.compile(
    r"(?<![━╸╺╾╼])[━╸╺╾╼]{1,512}+\s{0,8}(\d{1,12})/(\d{1,12}|--)\s{1,8}(-:--:--|\d{1,6}:\d\d:\d\d)\s{0,4}•\s{0,4}"
    r"(-:--:--|\d{1,6}:\d\d:\d\d)(?:\s{1,8}([\d.]{1,16})it/s)?([^\n]{0,1024})"
)
_RATE = re.compile(r"\s{0,8}([\d.]{1,16})\s{0,2}(s/)?([A-Za-z]{0,12})(/s)?")
_PCT0 = "0123456789 "  # how a redraw without description starts
_N_AT = re.compile(r"\s{0,8}(\d{1,12})\s{0,4}/")

# Log prefixes: timestamps, levels, logger names, bracketed tags ("[INFO]", "(SimpleTuner)", "[RANK:0]").
_PREFIX = re.compile(
    r"(?:"
    r"\s+"
    r"|[\[(<](?![^\])>\n]{0,24}?(?:[Ee]poch|[Ss]tep|[Ii]ter)\w{0,9}\s{0,4}[:=]?\s{0,4}\d)[^\])>\n]{0,80}[\])>]:?"
    r"|\d{2,4}[-/.]\d{1,2}[-/.]\d{1,4}(?:[ T]\d{1,2}:\d\d(?::\d\d)?(?:[.,]\d{1,9})?)?(?:Z|[+-]\d\d:?\d\d)?"
    r"|\d{1,2}:\d\d:\d\d(?:[.,]\d{1,9})?"
    r"|(?:INFO|WARNING|WARN|DEBUG|ERROR|CRITICAL|NOTICE|TRACE|FATAL)\b"
    r"(?:\s{0,4}[-:|]\s{0,4}[\w.<>]{1,60}(?=\s{0,4}[-:|]))?"  # "INFO - __main__ -", "INFO:root:"
    r"|[\w.]{1,60}\s-\s(?=(?:INFO|WARNING|WARN|DEBUG|ERROR|CRITICAL)\b)"
    r"|[IWEF]\d{4}\s\d\d:\d\d:\d\d\.\d{1,9}\s{1,8}\d{1,9}\s[\w.]{1,80}:\d{1,6}\]"
    r"|[-|:]"
    r"){0,12}"
)
_PUNCT = " \t-*#=>|•·:.~+_!/\\["
_WORD = re.compile(r"[a-z][a-z-]{0,30}")
# "key: value" / "key=value" settings (an identifier with "_" or ".", or a short label followed by a number).
_CONFIG = re.compile(
    r"(?:[a-z0-9]{1,40}(?:[_.][a-z0-9]{1,40}){1,8}\s{0,4}['\"]?\s{0,4}[:=]"
    r"|[a-z][a-z ()/-]{0,60}[:=]\s{0,8}[-+]?[\d.,]{1,20}(?:e[-+]?\d{1,3})?"
    r"\s{0,4}[%a-z]{0,4}\s{0,4},?\s{0,4}$)"
)
_EXC = re.compile(
    r"(?:[A-Za-z_]\w{0,80}\.){0,8}[A-Z]\w{0,80}(?:Error|Exception|Exit|Interrupt|Iteration|Failure|Fault)(?::|\s*$)"
)
_N_OF_TOTAL = r"\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,12})\s{0,4}(?:/|of)\s{0,4}(\d{1,12})"
_STEP_AT_START = re.compile(r"(?:global[ _]?)?(?:steps?|iter(?:ation)?s?)" + _N_OF_TOTAL)
_EPOCH_AT_START = re.compile(r"epochs?\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,9})\s{0,4}(?:/|of)\s{0,4}(\d{1,9})")
_STEP_ANY = re.compile(r"\b(?:global[ _]?)?(?:steps?|iter(?:ation)?s?)" + _N_OF_TOTAL)
_EPOCH_ANY = re.compile(r"\bepochs?\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,9})\s{0,4}(?:/|of)\s{0,4}(\d{1,9})")
_EPOCH_ONLY = re.compile(r"\bepoch\s{0,4}(\d{1,9})\b")
_LOSS = re.compile(
    r"(?<![\w/])(?:train(?:ing)?[_/ ]?|avr_|avg_|average[_ ]|step_|running[_ ]|total[_ ]|mean[_ ])?loss"
    r"['\"]?\s{0,4}(?:[:=]\s{0,4}|\s)['\"]?([-+]?(?:(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})(?:e[-+]?\d{1,3})?|nan|inf))"
)
_DICT_EPOCH = re.compile(r"['\"]epoch['\"]\s{0,4}:\s{0,4}['\"]?(\d{1,9}(?:\.\d{1,12})?)")
_NUM_EPOCHS = re.compile(r"num[ _]?(?:train[ _])?epochs?[^:=\n]{0,40}[:=]\s{0,8}(\d[\d,]{0,11})")
_TOTAL_STEPS = re.compile(
    r"total (?:optimization |training |train )?steps[^:=\n]{0,40}[:=]\s{0,8}(\d[\d,]{0,14})"
)
_MID = re.compile(
    r"\b(?:saving (?:the )?(?:model|checkpoint|state|weights|lora|adapter)"
    r"|(?:model|checkpoint|state|weights|lora) (?:saved|written)"
    r"|generating (?:sample|validation|eval|preview)"
    r"|(?:running|starting|start) (?:validation|evaluation|eval)\b"
    r"|(?:running|starting|start|begin(?:ning)?) (?:the )?training\b)"
)

# Words that say what a phase does, looked up on a bar's description or at a message's start.
_VAL_WORDS = re.compile(
    r"valid|evaluat|\beval\b|sanity|sampl|infer|predict|\btest|denois|render|preview"
    r"|generat\w*\s+(?:\w+\s+){0,2}(?:images?|samples?|videos?|validation|previews?|frames?)"
)
_SAVE_WORDS = re.compile(r"\bsav(?:e|ed|ing)\b|checkpoint(?!\s*shard)|upload|push(?:ing)? to hub|\bwrit")
_PRE_WORDS = re.compile(
    r"cach|load|download|fetch|caption|quantiz|quantis|scan|process|bucket|\bmap\b|filter|token|encod|embed"
    r"|shard|extract|prepar|resiz|comput|build|index|\bread|hash|convert|pack|truncat|apply|dataset|split"
    r"|\bfiles?\b|compil|initiali|calibrat|generat|unzip|copy|verif|check|discover|latent|\bbatches\b"
)
_WARM_WORDS = re.compile(r"warm[\s_-]?(?:ing\s)?up|\bwarm")
_PHASE_TOKEN = re.compile(
    r"(?:valid\w*|val|evaluat\w*|eval|sampl\w*|sanity|test\w*|predict\w*|inference|infer|denois\w*|render\w*"
    r"|generat\w*|cach\w*|load\w*|download\w*|fetch\w*|caption\w*|quanti[sz]\w*|scan\w*|\w*process\w*"
    r"|tokeni[sz]\w*|encod\w*|embed\w*|extract\w*|map|filter\w*|batches|warm\w*|sav\w*|checkpointing"
    r"|upload\w*|export\w*|comput\w*|resiz\w*|bucket\w*)\W*$"
)
_IDENT_TAIL = re.compile(r"[_(=\[]|\.\w")
_TRAIN_REST = re.compile(r"\btraining\b|\bfine-?tun")
_IMAGE_WORDS = re.compile(r"\b(?:images?|samples?|videos?|previews?|validation|frames?)\b")
_BAR_PREP_OBJECTS = re.compile(r"\bload|shard|latent|cache|caption|dataset|embed|bucket|metadata")
_PREP_OBJECTS = re.compile(r"latent|cache|caption|dataset|text embed|bucket|metadata|\blogs?\b")
_CKPT_OBJECTS = re.compile(
    r"checkpoint|ckpt|model|weights|state|lora|adapter|safetensors|hub|optimizer|\.pt\b"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_PRE_VERBS = _words(
    "loading load downloading download fetching fetch caching cache precaching pre-caching "
    "preprocessing pre-processing processing process preparing prepare scanning scan captioning "
    "caption captions quantizing quantising quantize quantise tokenizing tokenising tokenize "
    "extracting extract extracted unzipping unpacking resizing bucketing bucket buckets computing "
    "compute encoding encode building build initializing initialising initialize creating create "
    "making make discovering found checking verifying compiling mapping filtering indexing "
    "reading importing import enable enabling applying converting calculating copying dataset "
    "datasets installing inspecting collecting downloaded loaded cached"
)
_VAL_VERBS = _words(
    "validation validating validate evaluation evaluating evaluate eval sampling sample samples "
    "inference predicting testing"
)
_SAVE_VERBS = _words("saving saved save checkpointing exporting storing")
_PERSIST_VERBS = _words("deleting removing writing wrote uploading pushing")
_START_VERBS = _words("running starting start started begin beginning launching")
_TRAIN_FIRST = _words("training train fine-tuning finetuning")
_RESUME = _words("resuming resume")
_WARM_FIRST = _words("warming warmup warm-up warm")
_FIG_FIRST = _words("step steps global epoch epochs iter iteration iterations")
_GENERATE = _words("generating generate rendering")
_CONTENT_FIRST = _words("prompt prompts negative positive")
_ALL_FIRST = (
    _PRE_VERBS
    | _VAL_VERBS
    | _SAVE_VERBS
    | _PERSIST_VERBS
    | _START_VERBS
    | _TRAIN_FIRST
    | _RESUME
    | _WARM_FIRST
    | _GENERATE
    | {"checkpoint"}
)

# event kinds
_BAR, _FIG, _MARK, _DICT, _INFO, _LOSSLINE, _TB, _EXC_LINE = range(8)
# roles given in context
_R_NONE, _R_TRAIN, _R_AUX, _R_TRAIN_MARK = range(4)


class _Ev:
    """One recognised line (or a run of redraws of one bar, kept as its newest redraw).

    Defaults live on the class so that creating an event (hundreds per scan) sets only what it knows.
    """

    kind = -1
    stage: str | None = None
    role = 0  # _R_NONE
    certain = True
    desc = ""
    dcls = ""  # bars: "train" | "aux" | "" (no description)
    line = ""
    oldest = ""  # bars: the oldest redraw of the run seen so far
    head = ""  # bars: what every redraw starts with (the description part)
    tail = ""  # bars: the "/total" part every redraw contains
    rich = False
    n: int | None = None
    n0: int | None = None
    total: int | None = None
    epoch: float | None = None
    epochs: int | None = None
    per_epoch = False
    zero_based = False
    loss: float | None = None
    dict_eval = False

    def __init__(self, kind: int) -> None:
        self.kind = kind


# ------------------------------------------------------------------------------------------ public API


def parse_logs(text: str | None, *, job_id: str | None = None) -> InlineProgress:
    """Stage, percent of the whole run, last line and training figures from a log's tail.

    Pure and total: any string (or None) gives an `InlineProgress`, never an exception; `progress` is in
    [0, 100] or None; `last_log` is at most 80 characters. Reads at most `MAX_SCAN` characters from the
    end, so a 50 MB log costs what a 1 MB one does.
    """
    if not text:
        return InlineProgress(job_id=job_id, stage=None, last_log=None, progress=None)
    if not isinstance(text, str):  # bytes from a careless caller: decode rather than fail
        try:
            text = bytes(text).decode("utf-8", "replace")
        except Exception:
            text = str(text)
    try:
        return _parse(text, job_id)
    except Exception:  # pragma: no cover - defence in depth: a card must never break on a log line
        if _STRICT:
            raise
        return InlineProgress(job_id=job_id, stage=None, last_log=_last_log_only(text), progress=None)


# --------------------------------------------------------------------------------------------- driver


class _Result:
    __slots__ = ("eta", "loss", "progress", "rate", "settled", "stage", "step", "total")

    def __init__(self) -> None:
        self.stage: str | None = None
        self.progress: float | None = None
        self.step: int | None = None
        self.total: int | None = None
        self.rate: float | None = None
        self.eta: float | None = None
        self.loss: float | None = None
        self.settled = False


def _parse(text: str, job_id: str | None) -> InlineProgress:
    end = len(text)
    floor = max(0, end - MAX_SCAN)
    pos = end
    carry = ""
    chunk = _FIRST_CHUNK
    scanner = _Scanner()
    last_log: str | None = None
    result = _Result()
    while pos > floor:
        start = max(floor, pos - chunk)
        piece = text[start:pos] + carry
        if "\x1b" in piece or "\x9b" in piece:
            piece = _ANSI.sub("", piece)
        if "\r" in piece:
            piece = piece.replace("\r\n", "\n").replace("\r", "\n")
        lines = piece.split("\n")
        carry = ""
        if start > floor:
            carry = lines[0]  # the chunk starts mid-line: complete it with the next (older) chunk
            lines[0] = ""
            if len(carry) > _MAX_CARRY:  # a line longer than this is taken from where we can see it
                lines[0], carry = carry, ""
        if last_log is None:
            for line in reversed(lines):
                last_log = _clean_last(line) if line else None
                if last_log is not None:
                    break
        i = len(lines) - 1
        while i >= 0:
            i = scanner.feed(lines, i)  # stops early at a line that settles the training figure
            result = _evaluate(scanner.events_chrono())
            if result.settled:
                break
        pos = start
        if result.settled or i == -2:
            break
        chunk *= 4
    return InlineProgress(
        job_id=job_id,
        stage=result.stage,
        last_log=last_log,
        progress=result.progress,
        step=result.step,
        total_steps=result.total,
        rate=result.rate,
        eta_seconds=result.eta,
        loss=result.loss,
    )


def _clean_last(line: str) -> str | None:
    """The line as a card shows it: no control characters, stripped, at most 80 characters."""
    s = line if len(line) <= 4 * _LAST_LOG_MAX else line[: 4 * _LAST_LOG_MAX]
    s = _CTRL.sub("", s.replace("\t", " ")).strip()
    if not s:
        return None
    if len(s) > _LAST_LOG_MAX:
        s = s[: _LAST_LOG_MAX - 3] + "..."
    return s


def _last_log_only(text: str) -> str | None:
    tail = _ANSI.sub("", text[-_MAX_CARRY:])
    for line in reversed(re.split(r"\r\n|\r|\n", tail)):
        cleaned = _clean_last(line)
        if cleaned:
            return cleaned
    return None


# ------------------------------------------------------------------------------------ line recognition


class _Scanner:
    """Turns lines, newest first, into events; consecutive redraws of one bar become one event.

    Redraws of the bar already being read are recognised with two substring tests (same description,
    same total) and skipped, so a long validation phase costs little per line.
    """

    __slots__ = ("events", "head", "oldest", "recent", "run", "tail", "text_left")

    def __init__(self) -> None:
        self.text_left = _TEXT_BUDGET  # characters of plain text lines still to read (the costly ones)
        self.events: list[_Ev] = []  # newest first
        self.recent: list[_Ev] = []  # the last bars parsed, whose redraws are copied rather than parsed
        self.run: _Ev | None = None  # the bar whose older redraws are being skipped
        self.head = ""  # its description part ("steps:"), "" without one
        self.tail = ""  # its "/total " part
        self.oldest = ""  # its oldest redraw seen so far

    def events_chrono(self) -> list[_Ev]:
        run = self.run
        if run is not None:
            run.oldest = self.oldest
            run.n0 = None
        for ev in self.events:  # where a bar without description started matters to its meaning
            if ev.n0 is None and ev.kind == _BAR and not ev.dcls:
                ev.n0 = ev.n if ev.oldest is ev.line else _frame_n(ev.oldest)
        return self.events[::-1]

    def feed(self, lines: list[str], i: int) -> int:
        """Read `lines[i]`, `lines[i-1]`, ... (newest first); return the index to resume from.

        -1: the lines are all read; -2: the text budget is spent (stop reading older chunks). Stops
        right after a line that settles the run's progress on its own (a described training bar,
        a "step n/N" line), so a log whose last line is a training redraw costs one line.
        """
        events = self.events
        run, head, tail, oldest = self.run, self.head, self.tail, self.oldest
        recent = self.recent
        for j in range(i, -1, -1):
            line = lines[j]
            if not line:
                continue
            if run is not None:
                if head:
                    if line.startswith(head) and tail in line:
                        oldest = line  # an older redraw of the same bar
                        continue
                elif tail in line and "%|" in line and line[0] in _PCT0:
                    oldest = line
                    continue
                run.oldest = oldest
                run = None
            if line.isspace():
                continue
            if "%|" in line:
                ev = None
                if line.endswith("]"):
                    for known in recent:
                        if (
                            line.startswith(known.head)
                            and known.tail in line
                            and (known.head or line[0] in _PCT0)
                        ):
                            # a redraw of a bar parsed lately (bars taking turns: an image loop and its
                            # sampler): same description and total, only the count differs
                            ev = _Ev(_BAR)
                            ev.__dict__.update(known.__dict__)
                            ev.line = line
                            ev.n = _frame_n(line)
                            ev.n0 = None
                            break
                if ev is None:
                    ev = _tqdm_event(line)
                    if ev is not None:
                        after = _text_after_bar(ev.line)
                        if after is not None:  # "...it/s]03/03/2025 - INFO - Saving ...": newer than the bar
                            events.append(after)
                    if ev is not None:
                        recent.insert(0, ev)
                        del recent[4:]
                if ev is not None:
                    events.append(ev)
                    run, oldest, head, tail = ev, ev.line, ev.head, ev.tail
                    ev.oldest = oldest
                    if ev.dcls == "train" and _bar_progress(ev) is not None:
                        self._save(run, head, tail, oldest)
                        return j - 1
                    continue
            ev = _rich_event(line) if "•" in line and "/" in line else None
            if ev is not None:
                ev.oldest = ev.line
            else:
                self.text_left -= len(line)
                if self.text_left < 0:  # pages of captions, prompts or prose: what is older cannot matter
                    self._save(run, head, tail, oldest)
                    return -2
                ev = _text_event(line)
                if ev is None:
                    continue
            events.append(ev)
            if (ev.kind == _FIG and ev.total is not None) or (
                ev.kind == _BAR and ev.dcls == "train" and _bar_progress(ev) is not None
            ):
                self._save(run, head, tail, oldest)
                return j - 1
        self._save(run, head, tail, oldest)
        return -1

    def _save(self, run: _Ev | None, head: str, tail: str, oldest: str) -> None:
        self.run, self.head, self.tail, self.oldest = run, head, tail, oldest


def _frame_n(line: str) -> int | None:
    """The count of a redraw ("... | 12/28 [") without a full parse."""
    p = line.find("%|")
    q = line.find("|", p + 2) if p >= 0 else -1
    m = _N_AT.match(line, q + 1) if q >= 0 else None
    return int(m.group(1)) if m is not None else None


def _to_int(s: str | None) -> int | None:
    if not s:
        return None
    if not s.isdigit():
        s = s.replace(",", "")
        if not s.isdigit():
            return None
    return int(s) if len(s) <= 12 else None


def _tqdm_event(line: str) -> _Ev | None:
    seg = line if len(line) <= _MAX_LINE else line[-_MAX_LINE:]
    m = _TQDM.search(seg)
    if m is None:
        return None
    ev = _Ev(_BAR)
    ev.line = seg
    before = seg[: m.start()]
    desc = before.strip().rstrip(":").strip()
    ev.desc = desc
    ev.head = before.rstrip(" ")
    ev.tail = seg[m.end(3) : m.end(4) + 1]  # "/28 ": the total and what follows, so 28 never matches 280
    n, total = _to_int(m.group(3)), _to_int(m.group(4))
    ev.n, ev.total = n, total
    stats = m.group(5) or ""
    if "B/s" in stats or _looks_like_file(desc) or (n is None and total is None):
        # sizes ("1.2G/4.9G", "335M/335M", "MB/s") and file names: downloads and uploads, never steps
        ev.dcls, ev.stage = "aux", _aux_stage_for(desc) or PRE
        return ev
    if total is not None and total <= 0:
        ev.total = None
    _classify_bar(ev, desc)  # a count of unknown total ("300/?") still says which phase runs
    return ev


def _text_after_bar(line: str) -> _Ev | None:
    """A log line printed right after a redraw, with no line break in between."""
    if line.endswith("]"):
        return None
    close = line.rfind("]")
    if close < 0 or close + 4 >= len(line) or "%|" in line[close:]:
        return None
    rest = line[close + 1 :].strip()
    return _text_event(rest) if len(rest) > 3 else None


def _rich_event(line: str) -> _Ev | None:
    seg = line if len(line) <= _MAX_LINE else line[-_MAX_LINE:]
    m = _RICH.search(seg)
    if m is None:
        return None
    ev = _Ev(_BAR)
    ev.rich = True
    ev.line = seg
    desc = seg[: m.start()].strip()
    ev.desc = desc
    ev.n, ev.total = _to_int(m.group(1)), _to_int(m.group(2))
    if ev.total is not None and ev.total <= 0:
        ev.total = None
    _classify_bar(ev, desc)  # "45/--" (an iterable without length) still says which phase runs
    return ev


def _looks_like_file(desc: str) -> bool:
    return bool(desc) and " " not in desc and bool(re.search(r"\.[A-Za-z][\w]{0,11}$", desc))


@lru_cache(maxsize=512)
def _desc_meaning(desc: str) -> tuple[str, str | None, bool, int | None, int | None]:
    """What a bar description says: (class, stage, counts the whole run, epoch, epochs)."""
    low = desc.lower()
    if not low:
        return "", None, True, None, None
    aux = _aux_stage_for(desc)
    if aux is not None:
        return "aux", aux, False, None, None
    m = _EPOCH_ANY.search(low)
    epoch: int | None = None
    epochs: int | None = None
    if m is not None:
        epoch, epochs = int(m.group(1)), int(m.group(2))
    else:
        m1 = _EPOCH_ONLY.search(low)
        if m1 is not None:
            epoch = int(m1.group(1))
    counts_run = epoch is None or bool(re.search(r"step|iter|\bit\b", low))
    return "train", TRAIN, counts_run, epoch, epochs


def _aux_stage_for(desc: str) -> str | None:
    """The stage an auxiliary bar (or phrase) belongs to, or None when it reads as training."""
    low = desc.lower().strip()
    if not low:
        return None
    if " " not in low and not _PHASE_TOKEN.match(low):
        # One token that is not a phase word names the run ("flux_train_replicate", "steps", "lora-v2").
        return None
    if _VAL_WORDS.search(low):
        if "generat" in low and not _IMAGE_WORDS.search(low):
            return PRE
        return VAL
    if _WARM_WORDS.search(low):
        return WARMUP
    if _SAVE_WORDS.search(low) and not _BAR_PREP_OBJECTS.search(low):
        return SAVE
    if _PRE_WORDS.search(low):
        return PRE
    return None


def _classify_bar(ev: _Ev, desc: str) -> None:
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


def _message(line: str) -> tuple[str, str]:
    """A line's message without log prefixes and leading punctuation, and its lower-case form."""
    s = line if len(line) <= _MAX_LINE else line[:_MAX_LINE]
    m = _PREFIX.match(s)
    msg = s[m.end() :] if m is not None else s
    msg = msg.lstrip(_PUNCT)
    return msg, msg.lower()


def _text_event(line: str) -> _Ev | None:
    s = line.strip()
    head = s[:2]
    if head in ("{'", '{"'):
        return _dict_event(s)
    msg, low = _message(s)
    if not low:
        return None
    if ("Error" in msg or "Exception" in msg or "Interrupt" in msg or "Exit" in msg) and _EXC.match(msg):
        return _Ev(_EXC_LINE)
    if low.startswith("traceback (most recent call last)"):
        return _Ev(_TB)
    ev = _classify_message(low)
    if ev is None and "loss" in low:
        loss = _find_loss(low)
        if loss is not None:
            ev = _Ev(_LOSSLINE)
            ev.loss = loss
    if ev is None and ("epoch" in low or "steps" in low) and ("=" in low or ":" in low):
        ev = _info_event(low)
    return ev


def _classify_message(low: str) -> _Ev | None:
    wm = _WORD.match(low)
    word = wm.group(0) if wm is not None else ""
    rest = low[len(word) : len(word) + 160]
    if word in _CONTENT_FIRST or _IDENT_TAIL.match(rest):
        word = ""  # an identifier, a call or quoted content ("warmup_ratio", "save(", "prompt: ...")
    if word in _FIG_FIRST:
        ev = _figure_event(low)
        if ev is not None:
            return ev
    if word and word in _ALL_FIRST and _CONFIG.match(low):
        return None  # "warmup_steps: 100", "Num Epochs = 3", "save_every=250": settings, not activity
    stage: str | None = None
    if word in _SAVE_VERBS:
        if _IMAGE_WORDS.search(rest):
            stage = VAL
        elif _PREP_OBJECTS.search(rest):
            stage = PRE
        else:
            stage = SAVE
    elif word in _PERSIST_VERBS:
        if _IMAGE_WORDS.search(rest):
            stage = VAL
        elif _PREP_OBJECTS.search(rest):
            stage = PRE
        elif _CKPT_OBJECTS.search(rest):
            stage = SAVE
    elif word in _VAL_VERBS:
        stage = VAL
    elif word in _GENERATE:
        stage = VAL if _IMAGE_WORDS.search(rest) else PRE
    elif word in _START_VERBS:
        if _VAL_WORDS.search(rest):
            stage = VAL
        elif _TRAIN_REST.search(rest):
            stage = TRAIN
        elif _PRE_WORDS.search(rest[:40]):
            stage = PRE
    elif word in _TRAIN_FIRST:
        stage = TRAIN
    elif word in _RESUME:
        stage = TRAIN if re.match(r"\s*(?:the\s)?(?:training|train)\b", rest) else PRE
    elif word in _WARM_FIRST:
        if word != "warm" or rest.startswith(("ing", " up", "-up", "up")):
            stage = WARMUP
    elif word in _PRE_VERBS:
        stage = PRE  # during validation or training it inherits that phase (see _inherit_pre)
    elif word == "checkpoint" and re.search(r"\b(?:saved|written|created)\b", rest):
        stage = SAVE
    if stage is None and (
        "sav" in low or "valid" in low or "eval" in low or "generat" in low or "training" in low
    ):
        stage = _mid_line_stage(low)
    if stage is None:
        return None
    ev = _Ev(_MARK)
    ev.stage = stage
    if stage == TRAIN and "loss" in low:
        ev.loss = _find_loss(low)
    return ev


def _mid_line_stage(low: str) -> str | None:
    m = _MID.search(low)
    if m is not None:
        phrase = m.group(0)
        if phrase.startswith(("saving", "model", "checkpoint", "state", "weights", "lora")):
            return SAVE
        return TRAIN if phrase.endswith("training") else VAL
    if re.search(r"\b(?:saved|written) (?:in|to|at)\b", low):
        if _IMAGE_WORDS.search(low):
            return VAL
        if _PREP_OBJECTS.search(low):
            return PRE
        if _CKPT_OBJECTS.search(low) or "config" in low or "tokenizer" in low:
            return SAVE
    return None


def _figure_event(low: str) -> _Ev | None:
    """Plain progress lines: "step 1500/5000", "Epoch 3/10", "[Epoch 2/10][Step 150/1000] loss=0.3"."""
    sm = _STEP_AT_START.match(low)
    em = _EPOCH_AT_START.match(low)
    if sm is None and em is None:
        return None
    if sm is None:
        sm = _STEP_ANY.search(low, em.end()) if em is not None else None
    if em is None:
        em = _EPOCH_ANY.search(low, sm.end()) if sm is not None else None
    ev = _Ev(_FIG)
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
        ev.loss = _find_loss(low)
    return ev


def _dict_event(s: str) -> _Ev | None:
    """Hugging Face Trainer's logged dicts: training logs, evaluation results, the final summary."""
    low = s[:_MAX_LINE].lower()
    is_eval = "'eval_" in low or '"eval_' in low or "'val_" in low or '"val_' in low
    if not is_eval and "loss" not in low and "'epoch'" not in low and '"epoch"' not in low:
        return None
    ev = _Ev(_DICT)
    ev.dict_eval = is_eval
    if not is_eval:
        ev.loss = _find_loss(low)
    m = _DICT_EPOCH.search(low)
    if m is not None:
        try:
            ev.epoch = float(m.group(1))
        except ValueError:
            ev.epoch = None
    return ev


def _info_event(low: str) -> _Ev | None:
    """Run totals announced before training ("Num Epochs = 3", "Total optimization steps = 1,000")."""
    m1 = _NUM_EPOCHS.search(low)
    m2 = _TOTAL_STEPS.search(low)
    if m1 is None and m2 is None:
        return None
    ev = _Ev(_INFO)
    if m1 is not None:
        ev.epochs = _to_int(m1.group(1))
    if m2 is not None:
        ev.total = _to_int(m2.group(1))
    return ev


def _find_loss(low: str) -> float | None:
    """The first training loss on a line; NaN when it diverged ("loss=nan"), None when there is none."""
    m = _LOSS.search(low[:_MAX_LINE])
    if m is None:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) else math.nan


# --------------------------------------------------------------------------------- context and result


def _evaluate(events: list[_Ev]) -> _Result:
    """Give each event its role in context (oldest first), then read the answer from the newest ones."""
    ctx: str | None = None  # the auxiliary phase under way (None: training, or nothing known)
    main_total: int | None = None  # total of the description-less bar known to be the training bar
    main_certain = False
    main_open = False  # a training bar is mid-way (a fresh bar now is nested: an evaluation loop)
    aux_totals: dict[int, str] = {}  # description-less auxiliary bars seen, by total
    info_total: int | None = None
    info_epochs: int | None = None
    context_seen = False  # anything before that says what a description-less bar is
    trained_since = False  # a training log line (loss dict, "step n/N") since the last plain training bar
    in_tb = False
    last_bar: _Ev | None = None
    prev_main: tuple[int | None, bool, bool] = (None, False, False)
    for ev in events:
        ev.role = _R_NONE
        kind = ev.kind
        if kind == _TB:
            in_tb = True
            continue
        if kind == _EXC_LINE:
            in_tb = False
            continue
        if kind == _BAR:
            in_tb = False
            finished = ev.n is not None and ev.total is not None and ev.n >= ev.total
            if ev.dcls == "aux":
                ev.role = _R_AUX
                # an unfinished auxiliary bar is the loop the next plain bars run inside
                ctx = None if finished else ev.stage
            elif ev.dcls == "train":
                ev.role = _R_TRAIN
                ctx = None
                main_open = not finished
            else:
                prev_main = (main_total, main_certain, main_open)
                stage, certain = _plain_bar_stage(
                    ev.total,
                    ctx,
                    main_total,
                    main_certain,
                    main_open,
                    aux_totals,
                    info_total,
                    context_seen,
                    ev.n0 == 0,  # fresh: auxiliary loops start at 0; a bar resuming mid-way is not one
                    trained_since,
                )
                trained_since = False
                ev.stage, ev.certain = stage, certain
                if stage == TRAIN:
                    ev.role = _R_TRAIN
                    main_total, main_certain, main_open, ctx = ev.total, certain, not finished, None
                else:
                    ev.role = _R_AUX
                    if ev.total is not None:
                        aux_totals[ev.total] = stage
                    if ctx == PRE:
                        ctx = None  # "caching latents." announces one bar, not the ones after it
            context_seen = True
            last_bar = ev
            continue
        if in_tb:
            continue
        if kind == _MARK:
            if ev.stage == TRAIN:
                ev.role = _R_TRAIN_MARK
                ctx = None
            else:
                ev.role = _R_AUX
                ctx = ev.stage
            context_seen = True
        elif kind == _FIG:
            ev.role = _R_TRAIN
            ctx = None
            context_seen = trained_since = True
        elif kind == _DICT:
            if ev.dict_eval:
                ev.role = _R_AUX
                ev.stage = VAL
                lb = last_bar
                if (
                    lb is not None
                    and lb.dcls == ""
                    and lb.role == _R_TRAIN
                    and lb.n0 == 0
                    and lb.n == lb.total
                    and prev_main[0] is not None
                    and lb.total != prev_main[0]
                ):
                    # the bar that just finished was the evaluation loop, not training: take it back
                    lb.role, lb.stage = _R_AUX, VAL
                    main_total, main_certain, main_open = prev_main
                    if lb.total is not None:
                        aux_totals[lb.total] = VAL
                ctx = None
            else:
                ev.role = _R_TRAIN
                ev.epochs = info_epochs
                ctx = None
                trained_since = True
            context_seen = True
        elif kind == _INFO:
            if ev.total is not None:
                info_total = ev.total
            if ev.epochs is not None:
                info_epochs = ev.epochs
            context_seen = True
        elif kind == _LOSSLINE and ctx is None:
            ev.role = _R_TRAIN
            trained_since = True
    return _answer(events)


def _plain_bar_stage(
    total: int | None,
    ctx: str | None,
    main_total: int | None,
    main_certain: bool,
    main_open: bool,
    aux_totals: dict[int, str],
    info_total: int | None,
    context_seen: bool,
    fresh: bool,
    trained_since: bool,
) -> tuple[str, bool]:
    """What a bar without a description is, from its context: (stage, whether the context said so)."""
    same_as_main = total is not None and total == main_total
    if (same_as_main and (main_certain or trained_since)) or (total is not None and total == info_total):
        return TRAIN, True  # the same bar again, and training logs (loss lines) came in between
    if total is not None and total in aux_totals:
        return aux_totals[total], True
    if ctx is not None and fresh:
        return ctx, True  # a loop started right after "caching latents." / "Running Evaluation"
    if same_as_main:
        return TRAIN, False
    if main_open or main_total is not None or info_total is not None:
        return VAL, True  # a loop run inside training: evaluation or sampling
    return TRAIN, context_seen


def _answer(events: list[_Ev]) -> _Result:
    res = _Result()
    stage_settled = False
    stage_idx = -1
    # stage: the newest event that has one; an auxiliary "loading/caching" phase after training began
    # belongs to whatever phase it serves (validation, training), found further back.
    for i in range(len(events) - 1, -1, -1):
        ev = events[i]
        if ev.role == _R_NONE or (ev.kind == _LOSSLINE):
            continue
        stage = TRAIN if ev.role in (_R_TRAIN, _R_TRAIN_MARK) else ev.stage
        if stage is None:
            continue
        if stage == PRE:
            inherited, settled = _inherit_pre(events, i)
            res.stage = inherited
            stage_settled = settled
        else:
            res.stage = stage
            stage_settled = True
        stage_idx = i
        break
    # progress: the newest training figure (step-level preferred to epoch-level)
    fig_ev: _Ev | None = None
    epoch_fig: tuple[float, _Ev] | None = None
    newest_train: _Ev | None = None
    loss: float | None = None
    for i in range(len(events) - 1, -1, -1):
        ev = events[i]
        if ev.role != _R_TRAIN:
            if ev.role == _R_TRAIN_MARK and loss is None and fig_ev is None:
                loss = ev.loss  # "Train Epoch: 3 [1280/60000 (2%)]  Loss: 0.301"
            continue
        if newest_train is None:
            newest_train = ev
        if loss is None:
            loss = ev.loss if ev.kind != _BAR else _bar_loss(ev)
        if ev.kind == _BAR:
            if fig_ev is None and _bar_progress(ev) is not None:
                fig_ev = ev
        elif ev.kind == _FIG:
            if ev.total is not None:
                if fig_ev is None:
                    fig_ev = ev
            elif epoch_fig is None and ev.epochs:
                epoch_fig = (100.0 * (ev.epoch or 0.0) / ev.epochs, ev)
        elif ev.kind == _DICT and epoch_fig is None and ev.epoch is not None and ev.epochs:
            epoch_fig = (100.0 * ev.epoch / ev.epochs, ev)
        if fig_ev is not None and loss is not None:
            break
    # the newest loss, even when it diverged: a stale finite value would hide a NaN run
    res.loss = loss if loss is not None and math.isfinite(loss) else None
    certain = True
    if fig_ev is not None:
        certain = fig_ev.certain
        if fig_ev.kind == _BAR:
            _fill_from_bar(res, fig_ev)
        else:
            res.progress = _clamp(_fig_progress(fig_ev))
            res.step, res.total = fig_ev.n, fig_ev.total
    elif epoch_fig is not None:
        res.progress = _clamp(epoch_fig[0])
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


def _inherit_pre(events: list[_Ev], i: int) -> tuple[str, bool]:
    """Loading or caching after training began serves the phase around it; before, it is Preprocessing."""
    for j in range(i - 1, -1, -1):
        ev = events[j]
        if ev.role == _R_TRAIN_MARK:
            # "Running training" alone does not mean training has begun; "Training completed" after
            # training steps does
            if any(e.role == _R_TRAIN for e in events[:j]):
                return TRAIN, True
            continue
        if ev.role == _R_NONE or ev.kind == _LOSSLINE:
            continue
        if ev.role == _R_TRAIN:
            return TRAIN, True
        if ev.stage in (VAL, SAVE, WARMUP):
            return ev.stage, True
    return PRE, False


def _clamp(p: float | None) -> float | None:
    if p is None or not math.isfinite(p):
        return None
    return round(min(100.0, max(0.0, p)), 6)


def _fig_progress(ev: _Ev) -> float | None:
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


def _bar_progress(ev: _Ev) -> float | None:
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


def _fill_from_bar(res: _Result, ev: _Ev) -> None:
    res.progress = _clamp(_bar_progress(ev))
    n, total = ev.n, ev.total
    stats = _bar_stats(ev)
    rate, remaining = stats
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


def _bar_stats(ev: _Ev) -> tuple[float | None, float | None]:
    """(rate in it/s, seconds remaining) from the newest redraw's statistics."""
    if ev.rich:
        m = _RICH.search(ev.line)
        if m is None:
            return None, None
        rate = _float(m.group(5))
        return (rate if rate else None), _seconds(m.group(4))
    m = _TQDM.search(ev.line)
    if m is None or not m.group(5):
        return None, None
    parts = m.group(5).split(",", 2)
    remaining = None
    timing = parts[0]
    if "<" in timing:
        remaining = _seconds(timing.split("<", 1)[1])
    rate = None
    if len(parts) > 1:
        rm = _RATE.match(parts[1])
        if rm is not None:
            value = _float(rm.group(1))
            if value:
                if rm.group(2):  # "1.25s/it": seconds per iteration
                    rate = round(1.0 / value, 6)
                elif rm.group(4):
                    rate = value
    return rate, remaining


def _bar_loss(ev: _Ev) -> float | None:
    line = ev.line
    if ev.rich:
        m = _RICH.search(line)
        tail = m.group(6) if m is not None else ""
    else:
        m = _TQDM.search(line)
        tail = (m.group(5) or "") if m is not None else ""
    if "loss" not in tail.lower():
        return None
    return _find_loss(tail.lower())


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
