"""Regular expressions and word lists the recogniser reads lines with (data, no logic).

Every pattern is anchored or built from bounded / negated classes with distinct terminators, and the bar
patterns only start where a run of digits or bar glyphs starts (look-behind) and never give back what a
possessive run took, so matching stays linear in the line's length whatever the input.
"""

from __future__ import annotations

import re

MAX_LINE = 4096  # a line is classified on its first (or, for bars, last) 4 KiB


ANSI = re.compile(
    r"\x1b\[[0-?]{0,64}[ -/]{0,16}[@-~]"  # CSI (colours, cursor moves)
    r"|\x1b\][^\x07\x1b]{0,4096}(?:\x07|\x1b\\)?"  # OSC (titles, hyperlinks)
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|\x9b[0-?]{0,64}[ -/]{0,16}[@-~]"  # 8-bit CSI
)
CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# tqdm's default `{l_bar}{bar}{r_bar}`: "{desc}: {pct:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{stats}]".
TQDM = re.compile(
    r"(?<![\d.])(\d{1,3})(?:\.\d{1,3})?%\|([^|\n]{0,512}+)\|\s{0,8}"
    r"(\d[\d.,]{0,20}[a-zA-Z]{0,3})\s{0,4}/\s{0,4}(\d[\d.,]{0,20}[a-zA-Z]{0,3}|\?)"
    r"\s{0,8}(?:\[([^\]\n]{0,512})\]?)?"
)
# tqdm with no bar glyphs: `ncols=0` or a notebook widget's text ("Epoch 1:  50% 1/2 [00:00<00:00, 2.1it/s]"),
# and a bar of unknown total under a custom bar_format (Lightning: "Validation: |    | 0/? [00:00<?, ?it/s]").
# Groups: percent (absent in the second form), n, total, statistics (which must start with an elapsed time).
TQDM_PLAIN = re.compile(
    r"(?:(?<![\d.])(\d{1,3})(?:\.\d{1,3})?%|\| {0,512}+\|)\s{1,8}"
    r"(\d[\d.,]{0,20}[a-zA-Z]{0,3})\s{0,4}/\s{0,4}(\d[\d.,]{0,20}[a-zA-Z]{0,3}|\?)"
    r"\s{1,8}\[(\d{1,6}:\d\d(?::\d\d)?[^\]\n]{0,500})\]?"
)
# Lightning's RichProgressBar: "Epoch 3/9  ━━━━╸━━━ 45/100 0:00:10 • 0:00:12 4.50it/s v_num: 0 loss: 0.5".
RICH = re.compile(
    r"(?<![━╸╺╾╼])[━╸╺╾╼]{1,512}+\s{0,8}(\d{1,12})/(\d{1,12}|--)\s{1,8}(-:--:--|\d{1,6}:\d\d:\d\d)\s{0,4}•\s{0,4}"
    r"(-:--:--|\d{1,6}:\d\d:\d\d)(?:\s{1,8}([\d.]{1,16})it/s)?([^\n]{0,1024})"
)
RATE = re.compile(r"\s{0,8}([\d.]{1,16})\s{0,2}(s/)?([A-Za-z]{0,12})(/s)?")
PCT0 = "0123456789 "  # how a redraw without description starts
N_AT = re.compile(r"\s{0,8}(\d{1,12})\s{0,4}/")

# Log prefixes: timestamps, levels, logger names, bracketed tags ("[INFO]", "(SimpleTuner)", "[RANK:0]").
PREFIX = re.compile(
    r"(?:"
    r"\s+"
    # syslog: "Jun  1 12:00:00 host python[123]:"
    r"|[A-Z][a-z]{2}\s{1,2}\d{1,2}\s\d\d:\d\d:\d\d(?:\.\d{1,9})?\s[\w.-]{1,64}\s[\w./@-]{1,64}(?:\[\d{1,10}\])?:"
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
PUNCT = " \t-*#=>|•·:.~+_!/\\["
WORD = re.compile(r"[a-z][a-z-]{0,30}")
# "key: value" / "key=value" settings (an identifier with "_" or ".", or a short label followed by a number).
CONFIG = re.compile(
    r"(?:[a-z0-9]{1,40}(?:[_.][a-z0-9]{1,40}){1,8}\s{0,4}['\"]?\s{0,4}[:=]"
    r"|[a-z][a-z ()/-]{0,60}[:=]\s{0,8}[-+]?[\d.,]{1,20}(?:e[-+]?\d{1,3})?"
    r"\s{0,4}[%a-z]{0,4}\s{0,4},?\s{0,4}$)"
)
EXC = re.compile(
    r"(?:[A-Za-z_]\w{0,80}\.){0,8}[A-Z]\w{0,80}(?:Error|Exception|Exit|Interrupt|Iteration|Failure|Fault)(?::|\s*$)"
)
_N_OF_TOTAL = r"\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,12})\s{0,4}(?:/|of)\s{0,4}(\d{1,12})"
STEP_AT_START = re.compile(r"(?:global[ _]?)?(?:steps?|iter(?:ation)?s?)" + _N_OF_TOTAL)
EPOCH_AT_START = re.compile(r"epochs?\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,9})\s{0,4}(?:/|of)\s{0,4}(\d{1,9})")
STEP_ANY = re.compile(r"\b(?:global[ _]?)?(?:steps?|iter(?:ation)?s?)" + _N_OF_TOTAL)
EPOCH_ANY = re.compile(r"\bepochs?\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,9})\s{0,4}(?:/|of)\s{0,4}(\d{1,9})")
EPOCH_ONLY = re.compile(r"\bepoch\s{0,4}(\d{1,9})\b")
LOSS_VALUE = re.compile(
    r"(?<![\w/])(?:train(?:ing)?[_/ ]?|avr_|avg_|average[_ ]|step_|running[_ ]|total[_ ]|mean[_ ])?loss"
    r"['\"]?\s{0,4}(?:[:=]\s{0,4}|\s)['\"]?([-+]?(?:(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})(?:e[-+]?\d{1,3})?|nan|inf))"
)
# a logged dict's step: "'step': 120", "'global_step/max_steps': '10/222'" (ms-swift)
DICT_STEP = re.compile(
    r"['\"](?:global_)?steps?(?:/max_steps)?['\"]\s{0,4}:\s{0,4}['\"]?(\d{1,12})(?:\s{0,2}/\s{0,2}(\d{1,12}))?"
)
DICT_EPOCH = re.compile(r"['\"]epoch['\"]\s{0,4}:\s{0,4}['\"]?(\d{1,9}(?:\.\d{1,12})?)")
NUM_EPOCHS = re.compile(r"(?:num|max)[ _]?(?:train[ _])?epochs?[^:=\n]{0,40}[:=]\s{0,8}(\d[\d,]{0,11})")
TOTAL_STEPS = re.compile(
    r"total (?:optimization |training |train )?steps[^:=\n]{0,40}[:=]\s{0,8}(\d[\d,]{0,14})"
)
MID = re.compile(
    r"\b(?:saving (?:the )?(?:model|checkpoint|state|weights|lora|adapter)"
    r"|(?:model|checkpoint|state|weights|lora) (?:saved|written)"
    r"|generating (?:sample|validation|eval|preview)"
    r"|(?:running|starting|start) (?:validation|evaluation|eval)\b"
    r"|(?:running|starting|start|begin(?:ning)?) (?:the )?training\b"
    r"|(?:currently|now|still) training\b)"
)

# Words that say what a phase does, looked up on a bar's description or at a message's start.
VAL_WORDS = re.compile(
    r"valid|evaluat|\beval\b|sanity|sampl|infer|predict|\btest|denois|render|preview"
    r"|generat\w*\s+(?:\w+\s+){0,2}(?:images?|samples?|videos?|validation|previews?|frames?)"
)
SAVE_WORDS = re.compile(r"\bsav(?:e|ed|ing)\b|checkpoint(?!\s*shard)|upload|push(?:ing)? to hub|\bwrit")
PRE_WORDS = re.compile(
    r"cach|load|download|fetch|caption|quantiz|quantis|scan|process|bucket|\bmap\b|filter|token|encod|embed"
    r"|shard|extract|prepar|resiz|comput|build|index|\bread|hash|convert|pack|truncat|apply|dataset|split"
    r"|\bfiles?\b|compil|initiali|calibrat|generat|unzip|copy|verif|check|discover|latent|\bbatches\b"
)
WARM_WORDS = re.compile(r"warm[\s_-]?(?:ing\s)?up|\bwarm")
PHASE_TOKEN = re.compile(
    r"(?:valid\w*|val|evaluat\w*|eval|sampl\w*|sanity|test\w*|predict\w*|inference|infer|denois\w*|render\w*"
    r"|generat\w*|cach\w*|load\w*|download\w*|fetch\w*|caption\w*|quanti[sz]\w*|scan\w*|\w*process\w*"
    r"|tokeni[sz]\w*|encod\w*|embed\w*|extract\w*|map|filter\w*|batches|warm\w*|sav\w*|checkpointing"
    r"|upload\w*|export\w*|comput\w*|resiz\w*|bucket\w*)\W*$"
)
IDENT_TAIL = re.compile(r"[_(=\[]|\.\w")
TRAIN_REST = re.compile(r"\btraining\b|\bfine-?tun")
IMAGE_WORDS = re.compile(r"\b(?:images?|samples?|videos?|previews?|validation|frames?)\b")
BAR_PREP_OBJECTS = re.compile(r"\bload|shard|latent|cache|caption|dataset|embed|bucket|metadata")
PREP_OBJECTS = re.compile(r"latent|cache|caption|dataset|text embed|bucket|metadata|\blogs?\b")
CKPT_OBJECTS = re.compile(
    r"checkpoint|ckpt|model|weights|state|lora|adapter|safetensors|hub|optimizer|\.pt\b"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


PRE_VERBS = _words(
    "loading load downloading download fetching fetch caching cache precaching pre-caching "
    "preprocessing pre-processing processing process preparing prepare scanning scan captioning "
    "caption captions quantizing quantising quantize quantise tokenizing tokenising tokenize "
    "extracting extract extracted unzipping unpacking resizing bucketing bucket buckets computing "
    "compute encoding encode building build initializing initialising initialize creating create "
    "making make discovering found checking verifying compiling mapping filtering indexing "
    "reading importing import enable enabling applying converting calculating copying dataset "
    "datasets installing inspecting collecting downloaded loaded cached"
)
VAL_VERBS = _words(
    "validation validating validate evaluation evaluating evaluate eval sampling sample samples "
    "inference predicting testing"
)
SAVE_VERBS = _words("saving saved save checkpointing exporting storing")
PERSIST_VERBS = _words("deleting removing writing wrote uploading pushing packaging archiving compressing")
START_VERBS = _words("running starting start started begin beginning launching")
TRAIN_FIRST = _words("training train fine-tuning finetuning")
RESUME = _words("resuming resume")
WARM_FIRST = _words("warming warmup warm-up warm")
FIG_FIRST = _words("step steps global epoch epochs iter iteration iterations")
GENERATE = _words("generating generate rendering")
CONTENT_FIRST = _words("prompt prompts negative positive")
ALL_FIRST = (
    PRE_VERBS
    | VAL_VERBS
    | SAVE_VERBS
    | PERSIST_VERBS
    | START_VERBS
    | TRAIN_FIRST
    | RESUME
    | WARM_FIRST
    | GENERATE
    | {"checkpoint"}
)

# ---------------------------------------------------------------------------- the end of a run, in words
# "Training has completed.", "Training completed. Do not forget...", "Finished training", "Exiting training
# loop"
RUN_END = re.compile(
    r"(?:(?:training|fine-?tuning)\s(?:has\s|is\s|was\s)?(?:been\s)?(?:completed?|finished|done|ended|over)\b"
    r"|(?:finished|completed|done|ended)\s(?:the\s)?(?:training|fine-?tuning)\b"
    r"|exit(?:ing|ed)?\s(?:the\s)?(?:main\s)?training\sloop\b)"
    # not one epoch's or stage's end, nor a failure: "Finished training epoch 3", "...with errors"
    r"(?!\s{0,4}(?:for\s|of\s)?(?:the\s)?(?:epoch|step|batch|iter|round|stage|phase|stop)"
    r"|[^.\n]{0,30}\b(?:error|fail|abort|crash))"
)
# Lightning's fit loop: "`Trainer.fit` stopped: `max_epochs=10` reached."
LIMIT_REACHED = re.compile(r"stopped:\W{0,3}max_(?:epochs|steps)\s?=\s?\d{1,12}\W{0,3}reached")
# A final summary: "global_step = 1000, max_train_steps = 1000", "step: 500, total_steps: 500"
STEP_OF_MAX = re.compile(
    r"(?:global[ _]?)?steps?\s{0,4}[:=]\s{0,4}(\d{1,12})\s{0,4}[,;|]?\s{0,4}"
    r"(?:max|total)[ _](?:train(?:ing)?[ _])?steps\s{0,4}[:=]\s{0,4}(\d{1,12})"
)
# "step 250 - loss 0.1234", "Step 12: loss=0.03": a step count without the run's length
STEP_ONLY = re.compile(
    r"(?:epochs?\s{0,4}[:=#]?\s{0,4}\d{1,9}\s{0,4}[,;|-]?\s{0,4})?"  # "Epoch 2, Step 120, Loss 0.3"
    r"(?:global[ _]?)?(?:steps?|iter(?:ation)?s?)\s{0,4}[:=#]?\s{0,4}\[?\s{0,4}(\d{1,12})"
    r"(?![\d.]|\s{0,4}(?:/|of\b))"
)
# a logger or message naming the training loop: "(training-loop) Predicting.", "main training loop"
TRAIN_LOOP = re.compile(r"\b(?:train(?:ing)?[-_ ](?:epoch[-_ ])?|fit[-_])loop\b")

# ------------------------------------------------------------------------------------------- warmup
# warmup as an activity, not a setting: "warmup_ratio=0.1" and "warmup: 100 steps" are settings
WARM_ACTIVITY = re.compile(r"warm[\s-]?(?:ing\s)?up(?![_\w]|\s{0,2}[:=])")
# what follows the warm word in a setting: "warmup: 100 steps", "Warmup ratio 0.03", "warmup steps = 50"
WARM_SETTING = re.compile(
    r"[\w-]{0,12}\s{0,4}(?:(?:lr|steps?|ratio|iters?|iterations?|epochs?|updates?|period|length|factor)\b\s{0,4})?"
    r"[:=]?\s{0,4}[-+]?\d[\d.,]{0,20}(?:e[-+]?\d{1,3})?\s{0,4}(?:%|steps?|iters?|iterations?|epochs?|updates?)?"
    r"\s{0,4}[,.;)]?\s{0,4}$"
)
# "Warmup complete.", "warming up done": warmup is over
WARM_DONE = re.compile(
    r"\W{0,3}(?:up\s)?(?:is\s|has\s)?(?:been\s)?(?:complete|completed|done|finished|over|ended)\b"
)
