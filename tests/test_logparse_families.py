"""`parse_logs` on the trainer families real logs still tripped it on: one case per shape, each built from
the trainer's public source (the format string it prints) or a log posted publicly, noted in `src`.

Families: description-less preparation bars (quantization, size scans, "0/1" process counters, glued
redraws); the end of a run said in words; stage statements that are not bars (explicit warmup, loggers
named for the training loop, bare "step N - loss x"); captures that escape control characters
("#015", "#033[A"); tqdm without glyphs; Hugging Face logging prefixes and header totals; Lightning's
open-ended "Epoch N" bars and its validation bars. Negative cases say what must *not* move the card.
"""

from __future__ import annotations

import pytest

from jobwidget.core.logparse import parse_logs

from .logtable import PRE, SAVE, TRAIN, VAL, WARMUP, Case, check, tq


def lines(*parts: str) -> str:
    """A Replicate-style capture: one line per print or redraw."""
    return "\n".join(parts) + "\n"


def glued(*frames: str) -> str:
    """Redraws of one bar in a capture that dropped the carriage returns between them."""
    return "".join(frames)


def hf(line_no: int, message: str, file: str = "trainer.py") -> str:
    """transformers' explicit logging format: `[%(levelname)s|%(filename)s:%(lineno)s] %(asctime)s >>`."""
    return f"[INFO|{file}:{line_no}] 2024-06-01 12:00:00,308 >> {message}"


def st_debug(message: str, logger: str = "training-loop") -> str:
    """SimpleTuner's debug.log: `[RANK 0] %(asctime)s [%(levelname)s] (%(name)s) %(message)s`."""
    return f"[RANK 0] 2024-06-01 12:00:00,123 [DEBUG] ({logger}) {message}"


def kohya(message: str, where: str) -> str:
    """kohya's rich logger layout: time, level, message, then file:line at the right margin."""
    return f"2024-10-05 14:02:28 INFO     {message:<60} {where}"


QUANT = [tq(n, 57, n / 2.93, 2.93 if n else None) for n in (0, 1, 14, 29, 43, 57)]
SHARDS = "Loading checkpoint shards: 100%|██████████| 2/2 [00:03<00:00,  1.55s/it]"
HF_HEADER = [
    hf(2414, "***** Running training *****"),
    hf(2415, "  Num examples = 1,200"),
    hf(2416, "  Num Epochs = 3"),
    hf(2417, "  Instantaneous batch size per device = 2"),
    hf(2421, "  Gradient Accumulation steps = 8"),
    hf(2422, "  Total optimization steps = 450"),
    hf(2423, "  Number of trainable parameters = 4,194,304"),
]
HF_DICT = "{{'loss': {loss}, 'grad_norm': 0.6512, 'learning_rate': 3.1e-05, 'epoch': {epoch}}}"
ST_BAR = "Epoch {e}/25, Steps"
LT_EPOCH = "Epoch {e}"

FAMILY_CASES = [
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


@pytest.mark.parametrize("case", FAMILY_CASES, ids=[c.id for c in FAMILY_CASES])
def test_family_table(case: Case) -> None:
    check(case)


def test_family_table_is_big_and_sourced() -> None:
    assert len(FAMILY_CASES) >= 40
    assert len({c.id for c in FAMILY_CASES}) == len(FAMILY_CASES)
    unsourced = [c.id for c in FAMILY_CASES if len(c.src) < 20]
    assert not unsourced, f"cases without a note of where their shape comes from: {unsourced}"


# ------------------------------------------------------------------------------------------ the figures


def test_plain_bar_gives_rate_eta_and_loss() -> None:
    got = parse_logs(tq(300, 1000, 300, 0.4, "steps", "avr_loss=0.0965", glyphs=False))
    assert (got.stage, got.step, got.total_steps) == (TRAIN, 300, 1000)
    assert got.rate == pytest.approx(0.4)
    assert got.eta_seconds == 700 / 0.4
    assert got.loss == pytest.approx(0.0965)


def test_end_in_words_takes_the_run_length_from_the_bar() -> None:
    case = next(c for c in FAMILY_CASES if c.id == "end/simpletuner-training-has-completed")
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
