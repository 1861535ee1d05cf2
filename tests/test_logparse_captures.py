"""`parse_logs` on the capture formats real logs still tripped it on, one case per shape, each built from
the trainer's public source (the format string it prints) or a log posted publicly, noted in `src`.

Families: captures that escape control characters ("#015", "#033[A"); tqdm without glyphs (notebooks,
Colab); Hugging Face logging prefixes and the header totals behind them; Lightning's open-ended
"Epoch N" bars and its validation bars. The run-phase families are in test_logparse_phases.py; the
count of sourced cases over both tables is checked here.
"""

from __future__ import annotations

import pytest

from jobwidget.core.logparse import parse_logs

from .logtable import (
    HF_DICT,
    HF_HEADER,
    LT_EPOCH,
    PRE,
    QUANT,
    SAVE,
    TRAIN,
    VAL,
    Case,
    check,
    hf,
    lines,
    tq,
)
from .test_logparse_phases import PHASE_CASES

CAPTURE_CASES = [
    # --- captures that escape control characters ----------------------------------------------------
    Case(
        "escaped/rsyslog-cr-joined-redraws",
        lines(
            "Jun  1 12:00:00 host python[123]: "
            + "#015".join(tq(n, 1000, n, 1.0, "steps", "avr_loss=0.0923") for n in (100, 105, 110))
        ),
        TRAIN,
        11.0,
        "steps:  11%|█         | 110/1000 [01:50<14:50,  1.00it/s, avr_loss=0.0923]",
        src="rsyslog $EscapeControlCharactersOnReceive: control characters as '#' + 3 octal digits "
        "(CR = #015)",
    ),
    Case(
        "escaped/cursor-up-eval-bar-under-training-bar",
        lines(
            "#015".join(tq(n, 750, n / 3.3, 3.3) for n in (249, 250)),
            "#015".join(tq(n, 32, n / 12.1, 12.1 if n else None) + "#033[A" for n in (0, 8, 16)),
        ),
        VAL,
        100 * 250 / 750,
        "50%|█████     | 16/32 [00:01<00:01, 12.10it/s]",
        src="transformers ProgressCallback eval bar nested under the training bar (cursor-up ESC [ A), "
        "as a CloudWatch/SageMaker capture escapes it",
    ),
    Case(
        "escaped/lightning-epoch-bar-cloudwatch",
        lines(
            "#015".join(tq(n, 100, n / 9.8, 9.8, LT_EPOCH.format(e=0), "v_num=0") for n in (40, 45)),
        ),
        TRAIN,
        None,
        "Epoch 0:  45%|████▌     | 45/100 [00:04<00:05,  9.80it/s, v_num=0]",
        src="Lightning tqdm_progress.py `Epoch {current_epoch}` bar, #015-escaped by the log shipper",
    ),
    Case(
        "escaped/description-less-redraws-reaching-100",
        lines(" - quantizing 57 transformer blocks", "#015".join(QUANT)),
        PRE,
        None,
        "100%|██████████| 57/57 [00:19<00:00,  2.93it/s]",
        src="ai-toolkit quantize.py bar through rsyslog: '#015' right before '100%|' (tqdm's `{:3.0f}%`)",
    ),
    # --- tqdm without a terminal: no glyphs ----------------------------------------------------------
    Case(
        "plain/lightning-epoch-notebook",
        lines(tq(1, 2, 0.47, 2.1, LT_EPOCH.format(e=1), glyphs=False)),
        TRAIN,
        None,
        src="tqdm format_meter with ncols=0 (`l_bar[:-1] + r_bar[1:]`), as notebooks print Lightning's bar",
    ),
    Case(
        "plain/hf-trainer-colab-bar",
        lines(tq(0, 1000, 0, None, glyphs=False), tq(450, 1000, 450, 1.0, glyphs=False)),
        TRAIN,
        45.0,
        src="transformers ProgressCallback `tqdm(total=state.max_steps)` rendered without glyphs in Colab",
    ),
    Case(
        "plain/kohya-steps-bar-with-loss",
        lines(tq(300, 1000, 300, 1.0, "steps", "avr_loss=0.1", glyphs=False)),
        TRAIN,
        30.0,
        src='kohya train_network.py: tqdm(..., desc="steps") + set_postfix(avr_loss=...), ncols=0 form',
    ),
    Case(
        "plain/validation-dataloader",
        lines(
            tq(32, 32, 1.5, 21.9, LT_EPOCH.format(e=1), glyphs=False),
            tq(2, 5, 0.2, 9.1, "Validation DataLoader 0", glyphs=False),
        ),
        VAL,
        None,
        src='Lightning tqdm_progress.py: set_description(f"{desc} DataLoader {dataloader_idx}"), no glyphs',
    ),
    Case(
        "plain/datasets-map-is-preparation",
        lines(tq(20000, 20000, 17, 1150.09, "Map", unit=" examples", glyphs=False)),
        PRE,
        None,
        src="datasets `Map: ...examples/s` bar (unit=' examples'), no glyphs",
    ),
    Case(
        "plain/hf-eval-loop-inside-training",
        lines(
            tq(250, 750, 75, 3.3, glyphs=False),
            hf(4307, "***** Running Evaluation *****"),
            tq(16, 32, 1.3, 12.1, glyphs=False),
        ),
        VAL,
        100 * 250 / 750,
        src="transformers ProgressCallback prediction_bar (no description) after '***** Running Evaluation'",
    ),
    # --- Hugging Face logging prefixes and header totals ----------------------------------------------
    Case(
        "hf-prefix/loss-dicts-and-num-epochs",
        lines(*HF_HEADER, HF_DICT.format(loss=0.8123, epoch=1.62)),
        TRAIN,
        54.0,
        src="HF Trainer under LLaMA-Factory, explicit logging format: the header, then the logged dicts "
        "(the bar's redraws lost by the capture)",
    ),
    Case(
        "hf-prefix/bar-starts-after-header",
        lines(*HF_HEADER, tq(0, 450, 0, None)),
        TRAIN,
        0.0,
        src="transformers trainer.py header ('Num Epochs = ', 'Total optimization steps = ') under "
        "logging.enable_explicit_format()",
    ),
    Case(
        "hf-prefix/saving-checkpoint-keeps-the-figure",
        lines(
            *HF_HEADER,
            tq(225, 450, 260, 0.87),
            hf(3984, "Saving model checkpoint to out/checkpoint-225"),
        ),
        SAVE,
        50.0,
        src='transformers trainer.py: logger.info(f"Saving model checkpoint to {output_dir}"), explicit '
        "format",
    ),
    Case(
        "hf-prefix/ms-swift-global-step-of-max-steps",
        lines(
            "{'loss': 1.2043, 'grad_norm': 3.5, 'learning_rate': 8e-06, 'token_acc': 0.7012, "
            "'epoch': 0.21, 'global_step/max_steps': '20/96', 'percentage': '20.83%', "
            "'elapsed_time': '40s', 'remaining_time': '2m 32s', 'memory(GiB)': 6.1}"
        ),
        TRAIN,
        100 * 20 / 96,
        src="ms-swift trainer: logs['global_step/max_steps'] = f'{step}/{max_steps}' (README's output)",
    ),
    Case(
        "hf-prefix/ray-worker-prefixed-dict",
        lines(
            "(RayTrainWorker pid=1234)   Num Epochs = 4",
            "(RayTrainWorker pid=1234) {'loss': 0.912, 'learning_rate': 4e-05, 'epoch': 1.0}",
        ),
        TRAIN,
        25.0,
        src="Ray Train driver console prefixes each worker line with `(RayTrainWorker pid=...)` "
        "(see fixtures/logs/real_ray_gaudi_textual_inversion.log)",
    ),
    # --- Lightning's open-ended epochs and its other bars ---------------------------------------------
    Case(
        "lightning/epoch-3-bar-is-not-run-progress",
        lines(
            tq(100, 100, 10.2, 9.8, LT_EPOCH.format(e=2), "v_num=0, train_loss=0.512"),
            tq(45, 100, 4.6, 9.8, LT_EPOCH.format(e=3), "v_num=0, train_loss=0.498"),
        ),
        TRAIN,
        None,
        src='Lightning tqdm_progress.py: set_description(f"Epoch {trainer.current_epoch}") (counted from 0; '
        "max_epochs not shown)",
    ),
    Case(
        "lightning/epoch-3-of-max-epochs-from-a-config-dump",
        lines(
            "trainer:",
            "  max_epochs: 10",
            tq(45, 100, 4.6, 9.8, LT_EPOCH.format(e=3), "v_num=0, train_loss=0.498"),
        ),
        TRAIN,
        34.5,
        src="LightningCLI config (`trainer: max_epochs: 10`) printed before fit; epoch 3 counted from 0",
    ),
    Case(
        "lightning/validation-dataloader-is-validation",
        lines(
            tq(100, 100, 10.2, 9.8, LT_EPOCH.format(e=3), "v_num=0"),
            tq(2, 5, 0.2, 9.1, "Validation DataLoader 0"),
        ),
        VAL,
        None,
        src='Lightning tqdm_progress.py: validation_description "Validation" + f" DataLoader {idx}"',
    ),
    Case(
        "lightning/unknown-total-validation-bar",
        lines(
            tq(100, 100, 10.2, 9.8, LT_EPOCH.format(e=0), "v_num=0"),
            "Validation: |          | 0/? [00:00<?, ?it/s]",
        ),
        VAL,
        None,
        src="Lightning BAR_FORMAT '{l_bar}{bar}| {n_fmt}/{total_fmt} [...]' with total unknown "
        "(tqdm: `l_bar += '|'`, blank bar)",
    ),
    Case(
        "lightning/sanity-checking-unknown-total",
        lines(
            "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", "Sanity Checking: |          | 0/? [00:00<?, ?it/s]"
        ),
        VAL,
        None,
        src='Lightning tqdm_progress.py init_sanity_tqdm(desc="Sanity Checking", bar_format=BAR_FORMAT)',
    ),
    Case(
        "lightning/training-bar-before-the-first-epoch",
        lines(
            "Sanity Checking DataLoader 0: 100%|██████████| 2/2 [00:00<00:00, 30.10it/s]",
            "Training: |          | 0/? [00:00<?, ?it/s]",
        ),
        TRAIN,
        None,
        src='Lightning tqdm_progress.py init_train_tqdm(desc="Training") before set_description("Epoch 0")',
    ),
]


@pytest.mark.parametrize("case", CAPTURE_CASES, ids=[c.id for c in CAPTURE_CASES])
def test_capture_table(case: Case) -> None:
    check(case)


def test_family_tables_are_big_and_sourced() -> None:
    cases = PHASE_CASES + CAPTURE_CASES
    assert len(cases) >= 40
    assert len({c.id for c in cases}) == len(cases)
    unsourced = [c.id for c in cases if len(c.src) < 20]
    assert not unsourced, f"cases without a note of where their shape comes from: {unsourced}"


# ------------------------------------------------------------------------------------------ the figures


def test_plain_bar_gives_rate_eta_and_loss() -> None:
    got = parse_logs(tq(300, 1000, 300, 0.4, "steps", "avr_loss=0.0965", glyphs=False))
    assert (got.stage, got.step, got.total_steps) == (TRAIN, 300, 1000)
    assert got.rate == pytest.approx(0.4)
    assert got.eta_seconds == 700 / 0.4
    assert got.loss == pytest.approx(0.0965)


def test_escaped_captures_show_the_last_frame_not_the_escapes() -> None:
    text = "#015".join(tq(n, 28, n / 2.3, 2.3 if n else None) for n in range(29)) + "#015\n"
    got = parse_logs("Generating Images:  50%|█████     | 1/2 [00:12<00:12, 12.00s/it]\n" + text)
    assert got.last_log == "100%|██████████| 28/28 [00:12<00:00,  2.30it/s]"
    assert "#0" not in (got.last_log or "")


def test_a_literal_hash_number_is_not_taken_for_an_escape() -> None:
    got = parse_logs("step 10/100\nCaption for photo #0151.jpg: a dog")
    assert got.last_log is not None and got.last_log.startswith("Caption for photo")


def test_glued_and_plain_bars_cost_little_whatever_their_number() -> None:
    """Hostile shapes for the new recognisers: every line a glued run or a glyph-less lookalike."""
    glued_line = "".join(tq(n, 57, n, 1.0) for n in range(57)) + "\n"
    lookalike = "x 95% 19/20 [00:01<" + "0" * 3000 + "\n"
    for text in (glued_line * 2000, lookalike * 400, ("#015" * 20_000) + "\n", "| " * 300_000):
        got = parse_logs(text)
        assert got.progress is None or 0.0 <= got.progress <= 100.0
