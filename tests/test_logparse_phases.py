"""`parse_logs` on the run phases real logs still tripped it on, one case per shape, each built from the
trainer's public source (the format string it prints) or a log posted publicly, noted in `src`.

Families: preparation drawn as bars without a description (quantization, size scans, "0/1" process
counters, glued redraws); the end of a run said in words; stage statements that are not bars (explicit
warmup, loggers named for the training loop, bare "step N - loss x"). Negative cases say what must *not*
move the card. The capture-format families are in test_logparse_captures.py.
"""

from __future__ import annotations

import pytest

from jobwidget.core.logparse import parse_logs

from .logtable import (
    HF_HEADER,
    LT_EPOCH,
    PRE,
    QUANT,
    SHARDS,
    ST_BAR,
    TRAIN,
    WARMUP,
    Case,
    check,
    glued,
    hf,
    kohya,
    lines,
    st_debug,
    tq,
)

PHASE_CASES = [
    # --- preparation drawn as bars without a description --------------------------------------------
    Case(
        "prep/ai-toolkit-quantizing-blocks-bar-at-100",
        lines("Loading transformer", "Quantizing Transformer", " - quantizing 57 transformer blocks", *QUANT),
        PRE,
        None,
        src='ai-toolkit toolkit/util/quantize.py: print_and_status_update(f" - quantizing {n} transformer '
        'blocks"), then `for block in tqdm(all_blocks)`',
    ),
    Case(
        "prep/ai-toolkit-quantizing-blocks-glued-redraws",
        lines("Quantizing Transformer", " - quantizing 57 transformer blocks", glued(*QUANT)),
        PRE,
        None,
        "100%|██████████| 57/57 [00:19<00:00,  2.93it/s]",
        src="same bar, captured without the carriage returns tqdm writes before each redraw",
    ),
    Case(
        "prep/quantizing-only-the-final-redraw-captured",
        lines("Quantizing Transformer", " - quantizing 57 transformer blocks", QUANT[-1]),
        PRE,
        None,
        src="ai-toolkit quantize.py bar; a capture keeping only its last redraw (57/57, 2.93it/s, 19 s)",
    ),
    Case(
        "prep/negative-quantization-bar-100-during-loading-no-announcement",
        lines(SHARDS, *QUANT),
        PRE,
        None,
        src="transformers `Loading checkpoint shards` bar, then ai-toolkit's description-less "
        "`tqdm(all_blocks)` quantization loop",
    ),
    Case(
        "prep/quantizing-extras-after-the-blocks",
        lines(" - quantizing 57 transformer blocks", glued(*QUANT), " - quantizing extras"),
        PRE,
        None,
        src='ai-toolkit hidream_model.py: print_and_status_update(" - quantizing extras") after the loop',
    ),
    Case(
        "prep/ai-toolkit-image-dimension-scan-midway",
        lines("  -  Preprocessing image dimensions", tq(0, 12, 0, None), tq(5, 12, 0.1, 48.1)),
        PRE,
        None,
        src='ai-toolkit toolkit/data_loader.py: print_acc(f"  -  Preprocessing image dimensions") then '
        "`for file in tqdm(self.file_list)`",
    ),
    Case(
        "prep/kohya-image-size-scan-glued",
        lines(
            kohya("loading image sizes.", "train_util.py:992"),
            glued(tq(0, 20, 0, None), tq(20, 20, 0.02, 1013.47)),
        ),
        PRE,
        None,
        "100%|██████████| 20/20 [00:00<00:00, 1013.47it/s]",
        src='kohya sd-scripts library/train_util.py: logger.info("loading image sizes.") + '
        "`for info in tqdm(self.image_data.values())`",
    ),
    Case(
        "prep/kohya-cache-check-then-latent-caching",
        lines(
            kohya("checking cache validity...", "train_util.py:1251"),
            tq(20, 20, 0.01, 5000.0),
            kohya("caching latents...", "train_util.py:1293"),
            tq(4, 10, 4.4, 0.91),
        ),
        PRE,
        None,
        src='kohya train_util.py: logger.info("checking cache validity...") / ("caching latents...") each '
        "followed by a description-less `tqdm(batches, smoothing=1, total=len(batches))`",
    ),
    Case(
        "prep/kohya-loading-model-for-process-0-of-1",
        lines(
            kohya("preparing accelerator", "train_network.py:225"),
            kohya("loading model for process 0/1", "sdxl_train_util.py:32"),
        ),
        PRE,
        None,
        src='kohya library/sdxl_train_util.py: logger.info(f"loading model for process '
        '{local_process_index}/{num_processes}") ("0/1" is a process index)',
    ),
    Case(
        "prep/one-item-loop-0-of-1-is-not-progress",
        lines(SHARDS, tq(0, 1, 0, None)),
        PRE,
        None,
        src="tqdm over a one-item list (a per-process loading loop) right after transformers' shards bar",
    ),
    Case(
        "prep/simpletuner-aspect-bucket-cache",
        lines(
            "2024-06-01 12:00:00,123 [INFO] (id=subject) Refreshing aspect buckets on main process.",
            tq(40, 120, 2, 20.0, "Generating aspect bucket cache"),
        ),
        PRE,
        None,
        src='SimpleTuner helpers/metadata/backends/base.py: tqdm(..., desc="Generating aspect bucket cache")',
    ),
    # --- the end of a run, said in words ------------------------------------------------------------
    Case(
        "end/simpletuner-training-has-completed",
        lines(
            tq(999, 1000, 1200, 0.83, ST_BAR.format(e=25), "lr=0.0001, step_loss=0.0912"),
            "2024-06-01 12:20:01,000 [INFO] Training has completed.",
        ),
        TRAIN,
        100.0,
        src='SimpleTuner helpers/training/trainer.py: logger.info(f"Training has completed."\n'
        'f"\\n -> global_step = ..., max_train_steps = ...")',
    ),
    Case(
        "end/simpletuner-final-global-step-summary",
        lines(
            tq(999, 1000, 1200, 0.83, ST_BAR.format(e=25), "lr=0.0001, step_loss=0.0912"),
            "2024-06-01 12:20:01,000 [INFO] Training has completed.",
            " -> global_step = 1000, max_train_steps = 1000, epoch = 25, num_train_epochs = 25",
        ),
        TRAIN,
        100.0,
        src="same log record's second line (the f-string holds a newline)",
    ),
    Case(
        "end/simpletuner-exiting-training-loop",
        lines(
            tq(998, 1000, 1199, 0.83, ST_BAR.format(e=25), "lr=0.0001, step_loss=0.0912"),
            "2024-06-01 12:20:02,000 [INFO] Exiting training loop. Beginning model unwind at epoch 25, "
            "step 1000",
        ),
        TRAIN,
        100.0,
        src='SimpleTuner trainer.py: logger.info(f"Exiting training loop. Beginning model unwind at epoch '
        '{epoch}, step {global_step}")',
    ),
    Case(
        "end/hf-training-completed-after-prefixed-header",
        lines(
            *HF_HEADER,
            tq(449, 450, 520, 0.87),
            hf(3984, "Saving model checkpoint to out/checkpoint-450"),
            hf(2681, ""),
            "",
            "Training completed. Do not forget to share your model on huggingface.co/models =)",
        ),
        TRAIN,
        100.0,
        src='transformers trainer.py: logger.info("\\n\\nTraining completed. Do not forget to share your '
        'model on huggingface.co/models =)\\n\\n") under logging.enable_explicit_format()',
    ),
    Case(
        "end/finished-bar-redrawn-after-the-end-stays-100",
        lines(
            tq(999, 1000, 1200, 0.83, ST_BAR.format(e=25), "lr=0.0001, step_loss=0.0912"),
            "2024-06-01 12:20:01,000 [INFO] Training has completed.",
            tq(999, 1000, 1201, 0.83, ST_BAR.format(e=25), "lr=0.0001, step_loss=0.0912"),
        ),
        TRAIN,
        100.0,
        src="tqdm std.py close(): a bar left on screen is displayed once more (`self.display(pos=0)`)",
    ),
    Case(
        "end/lightning-fit-stopped-max-epochs",
        lines(
            tq(32, 32, 1.5, 21.92, LT_EPOCH.format(e=9), "v_num=0, train_loss=0.312"),
            tq(5, 5, 0.2, 30.1, "Validation DataLoader 0"),
            "`Trainer.fit` stopped: `max_epochs=10` reached.",
        ),
        TRAIN,
        100.0,
        src='Lightning loops/fit_loop.py: rank_zero_info(f"`Trainer.fit` stopped: `max_epochs='
        '{self.max_epochs!r}` reached.")',
    ),
    Case(
        "end/lightning-fit-stopped-max-steps-with-level-prefix",
        lines(
            tq(12, 32, 0.6, 21.0, LT_EPOCH.format(e=15), "v_num=1"),
            "INFO: `Trainer.fit` stopped: `max_steps=500` reached.",
        ),
        TRAIN,
        100.0,
        src='Lightning fit_loop.py: rank_zero_info(f"`Trainer.fit` stopped: `max_steps={self.max_steps!r}` '
        'reached.") under the "INFO: " console handler',
    ),
    Case(
        "end/negative-one-epoch-finished-is-not-the-run",
        lines(tq(120, 400, 130, 0.92, "steps"), "Finished training epoch 3"),
        TRAIN,
        30.0,
        src='custom loops: logger.info(f"Finished training epoch {epoch}") at each epoch\'s end',
    ),
    Case(
        "end/negative-training-finished-with-errors",
        lines(tq(120, 400, 130, 0.92, "steps"), "Training finished with errors, see above"),
        TRAIN,
        30.0,
        src="a run that ends badly says so; that is not its completion",
    ),
    Case(
        "end/negative-load-best-model-at-end-setting",
        lines(
            "TrainingArguments(",
            "load_best_model_at_end=True,",
            "save_on_each_node=False,",
            "num_train_epochs=3.0,",
        ),
        None,
        None,
        src="transformers TrainingArguments.__str__ (one `name=value,` per line): settings naming the end",
    ),
    # --- stage statements that are not bars ---------------------------------------------------------
    Case(
        "stage/explicit-warmup-iterations",
        lines(SHARDS, "2024-06-01 12:00:00,123 - INFO - Starting warmup iterations..."),
        WARMUP,
        None,
        src='warmup loops in public training scripts: logger.info("Starting warmup iterations...")',
    ),
    Case(
        "stage/warmup-step-figure-is-not-run-progress",
        lines("Warming up the model...", "Warmup Step 20/100, Current LR: 2.00e-05"),
        WARMUP,
        None,
        src='public trainers: print(f"Warmup Step {step}/{warmup_steps}, Current LR: {lr:.2e}")',
    ),
    Case(
        "stage/warmup-complete-hands-over-to-training",
        lines("Warmup step 100/100 completed.", "Warmup complete. Average loss: 0.4120"),
        TRAIN,
        None,
        src='public trainers: print(f"Warmup complete. Average loss: {avg:.4f}") after the warmup loop',
    ),
    Case(
        "stage/negative-deepspeed-config-dump-warmuplr",
        lines(
            SHARDS,
            "[2024-06-01 12:00:03,410] [INFO] [config.py:1000:print]   scheduler_name ..... WarmupLR",
            "[2024-06-01 12:00:03,410] [INFO] [config.py:1000:print]   scheduler_params ............. "
            "{'warmup_min_lr': 0, 'warmup_max_lr': 0.0002, 'warmup_num_steps': 500}",
        ),
        PRE,
        None,
        src="DeepSpeed runtime/config.py print() of the engine config, as pasted in DeepSpeed issue threads",
    ),
    Case(
        "stage/negative-simpletuner-warmup-setting-message",
        lines(
            SHARDS,
            "2024-06-01 12:00:00,123 [INFO] Optimizer contains LR scheduler, warmup steps will be set to "
            "100.",
        ),
        PRE,
        None,
        src='SimpleTuner optimizer_param.py: logger.info(f"Optimizer contains LR scheduler, warmup steps '
        'will be set to {args.lr_warmup_steps}.")',
    ),
    Case(
        "stage/negative-json-config-dump-warmup-ratio",
        lines(
            "Loading dataset my_pairs.json...",
            "{",
            '  "lr_scheduler_type": "cosine",',
            '  "warmup_ratio": 0.1,',
        ),
        PRE,
        None,
        src="a LLaMA-Factory JSON config (`lr_scheduler_type`, `warmup_ratio` keys) printed before training",
    ),
    Case(
        "stage/negative-warmup-as-a-setting-with-units",
        lines("Preparing dataset", "warmup: 100 steps", "Warmup ratio 0.03"),
        PRE,
        None,
        src="settings printed as `label: value unit`, as YAML config dumps and trainers' summaries do",
    ),
    Case(
        "stage/simpletuner-training-loop-logger-predicting",
        lines(st_debug("Sending latent batch to GPU."), st_debug("Predicting.")),
        TRAIN,
        None,
        src='SimpleTuner trainer.py: training_logger = _setup_logger("training-loop"); '
        'training_logger.debug("Predicting.") in debug.log',
    ),
    Case(
        "stage/simpletuner-training-loop-after-a-save",
        lines(
            st_debug("Saving state to output/checkpoint-500", "SimpleTuner"),
            st_debug("Working on batch size: 1"),
            st_debug("Backwards pass."),
        ),
        TRAIN,
        None,
        src='SimpleTuner trainer.py: training_logger.debug(f"Working on batch size: {bsz}"), '
        '("Backwards pass.")',
    ),
    Case(
        "stage/hf-debug-currently-training",
        lines(
            SHARDS,
            "[DEBUG|trainer.py:2323] 2024-06-01 12:00:00,100 >> Currently training with a batch size of: 8",
        ),
        TRAIN,
        None,
        src='transformers trainer.py _inner_training_loop: logger.debug(f"Currently training with a batch '
        'size of: {self._train_batch_size}")',
    ),
    Case(
        "stage/bare-step-loss-with-header-total",
        lines(
            "  Total optimization steps = 500",
            "2024-06-01 12:00:00,123 - INFO - __main__ - Step 120 - Loss: 0.4312, LR: 2.00e-05",
        ),
        TRAIN,
        24.0,
        src='custom accelerate loops: logger.info(f"Step {global_step} - Loss: {loss:.4f}, LR: {lr:.2e}")',
    ),
    Case(
        "stage/bare-step-loss-without-total",
        lines(SHARDS, "step 12 - loss 0.1234"),
        TRAIN,
        None,
        src='public training scripts: print(f"step {step} - loss {loss:.4f}") (no run length anywhere)',
    ),
    Case(
        "stage/negative-steps-setting-is-not-a-step",
        lines("Loading transformer", "steps: 1000", "save_every: 250"),
        PRE,
        None,
        src="ai-toolkit's YAML config dump (`train: steps: 1000`, `save: save_every: 250`) printed at start",
    ),
]


@pytest.mark.parametrize("case", PHASE_CASES, ids=[c.id for c in PHASE_CASES])
def test_phase_table(case: Case) -> None:
    check(case)


def test_end_in_words_takes_the_run_length_from_the_bar() -> None:
    case = next(c for c in PHASE_CASES if c.id == "end/simpletuner-training-has-completed")
    got = parse_logs(case.text)  # "Training has completed." after 999/1000
    assert (got.progress, got.step, got.total_steps, got.eta_seconds) == (100.0, 1000, 1000, 0.0)


def test_bare_step_line_takes_the_header_total_and_keeps_its_loss() -> None:
    got = parse_logs(lines("  Total optimization steps = 500", "Step 120 - Loss: 0.4312, LR: 2.00e-05"))
    assert (got.step, got.total_steps) == (120, 500)
    assert got.loss == pytest.approx(0.4312)


def test_header_total_found_far_behind_bare_step_lines() -> None:
    body = "".join(f"Step {k} - Loss: 0.{k % 97:04d}\n" for k in range(1, 1200))  # ~30 KB of plain text
    got = parse_logs("  Total optimization steps = 4,000\n" + body)
    assert (got.step, got.total_steps) == (1199, 4000)
