"""`parse_logs`: stage, run progress and last line from real trainer logs (see fixtures/logs/SOURCES.md).

The table cuts each fixture log at a moment of the run (the log as a GET would return it then) and
states what a card must show: the stage, the percent of the whole run (never an auxiliary bar's, never
tqdm's rounded figure) and the last line.
"""

from __future__ import annotations

import gc
import math
import threading
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwidget.core import logparse
from jobwidget.core.logparse import MAX_SCAN, parse_logs
from jobwidget.core.logparse.scanner import Fed, Scanner

from .deadlines import DEADLINE
from .logtable import LAST, PRE, SAVE, TRAIN, VAL, WARMUP, Case, check, fixture, upto

A = "ai_toolkit_replicate_flux.log"
K = "kohya_sd_scripts_sdxl_lora.log"
S = "simpletuner_flux_lora.log"
HR = "hf_trainer_sft_raw.log"
HI = "hf_trainer_info_replicate.log"
LT = "lightning_tqdm_crlf.log"
LR = "lightning_rich.log"
D = "diffusers_dreambooth_lora.log"
RK = "real_kohya_sd_scripts_issue_1464.log"
RR = "real_ray_gaudi_textual_inversion.log"

CASES = [
    # --- Replicate's Flux LoRA trainer (flux-fine-tuner on ai-toolkit) -----------------------------------
    Case("flux/weights-download", upto(A, "downloading took:"), PRE, None),
    Case("flux/llava-shards-67%-not-run-progress", upto(A, "Loading checkpoint shards:  67%"), PRE, None),
    Case("flux/llava-shards-3-of-3-is-not-100%", upto(A, "Loading checkpoint shards: 100%"), PRE, None),
    Case("flux/caption-mentions-validation", upto(A, "photo-02.jpg"), PRE, None),
    Case("flux/caption-mentions-checkpoint", upto(A, "photo-03.jpg"), PRE, None),
    Case("flux/caption-mentions-warming-up", upto(A, "photo-04.jpg"), PRE, None),
    Case("flux/config-dump-gradient-checkpointing", upto(A, '"gradient_checkpointing": true,'), PRE, None),
    Case("flux/config-dump-warmup-is-not-warmup", upto(A, '"lr_warmup_steps": 0,'), PRE, None),
    Case("flux/config-dump-save-every", upto(A, '"save_every": 100,'), PRE, None),
    Case("flux/quantizing", upto(A, "Quantizing transformer"), PRE, None),
    Case(
        "flux/dimension-scan-bar-without-description",
        upto(A, "| 12/12 [00:00<00:00, 3208.56it/s]"),
        PRE,
        None,
    ),
    Case("flux/saving-latents-is-caching", upto(A, "-  Saving latents to disk"), PRE, None),
    Case("flux/caching-latents-bar", upto(A, "Caching latents to disk: 100%", 3), PRE, None),
    Case("flux/baseline-samples", upto(A, "Generating Images:  50%"), VAL, None),
    Case("flux/training-starts", upto(A, "| 0/300 ["), TRAIN, 0.0),
    Case("flux/training-40", upto(A, "| 40/300 ["), TRAIN, 100 * 40 / 300),
    Case("flux/training-99", upto(A, "| 99/300 ["), TRAIN, 33.0),
    Case("flux/save-keeps-last-figure", upto(A, "Saving at step 100"), SAVE, 33.0),
    Case(
        "flux/saved-checkpoint",
        upto(A, "Saved checkpoint to output/flux_train_replicate/flux_train_replicate_000000100"),
        SAVE,
        33.0,
    ),
    Case(
        "flux/wandb-upload-of-weights",
        upto(A, "Saving weights to W&B: flux_train_replicate_000000100"),
        SAVE,
        33.0,
    ),
    Case("flux/sampling-keeps-last-figure", upto(A, "Generating Images:  50%", 2), VAL, 33.0),
    Case("flux/training-resumes", upto(A, "| 100/300 ["), TRAIN, 100 * 100 / 300),
    Case("flux/removing-old-save", upto(A, "Removing old save"), SAVE, 100 * 199 / 300),
    Case("flux/sampler-inner-bar-14-of-28", upto(A, "| 14/28 [", 2), VAL, 100 * 199 / 300),
    Case("flux/sampler-inner-bar-28-of-28", upto(A, "| 28/28 [", 2), VAL, 100 * 199 / 300),
    Case("flux/last-redraw-rounded-to-100%", upto(A, "| 299/300 ["), TRAIN, 100 * 299 / 300),
    Case(
        "flux/final-save",
        upto(A, "Saved checkpoint to output/flux_train_replicate/flux_train_replicate.safetensors"),
        SAVE,
        100 * 299 / 300,
    ),
    Case(
        "flux/tar-listing-after-save",
        fixture(A),
        SAVE,
        100 * 299 / 300,
        "output/flux_train_replicate/captions/photo-01.txt",
    ),
    # --- kohya sd-scripts --------------------------------------------------------------------------------
    Case("kohya/loading-image-sizes-bar", upto(K, "| 20/20 [00:00<00:00, 1013.47it/s]"), PRE, None),
    Case("kohya/caching-latents-bar", upto(K, "| 20/20 [00:11"), PRE, None),
    Case("kohya/running-training", upto(K, "running training / 学習開始"), TRAIN, None),
    Case("kohya/run-totals", upto(K, "total optimization steps / 学習ステップ数: 200"), TRAIN, None),
    Case("kohya/epoch-1-of-10-with-bar-at-0", upto(K, "epoch 1/10"), TRAIN, 0.0),
    Case("kohya/steps-bar", upto(K, "| 14/200 ["), TRAIN, 7.0),
    Case("kohya/saving-checkpoint", upto(K, "saving checkpoint: /outputs/sks_dog-000001"), SAVE, 10.0),
    Case("kohya/epoch-line-does-not-beat-steps-bar", upto(K, "epoch 2/10"), TRAIN, 10.0),
    Case("kohya/sample-images", upto(K, "generating sample images at step"), VAL, 20.0),
    Case(
        "kohya/sample-prompt-mentions-checkpoint",
        upto(K, "prompt: a photo of sks dog in a bucket, checkpoint"),
        VAL,
        20.0,
    ),
    Case("kohya/sampler-bar-20-of-30", upto(K, "| 20/30 ["), VAL, 20.0),
    Case("kohya/sampler-bar-30-of-30", upto(K, "| 30/30 [", 2), VAL, 20.0),
    Case("kohya/epoch-3", upto(K, "epoch 3/10"), TRAIN, 20.0),
    Case("kohya/steps-42", upto(K, "| 42/200 ["), TRAIN, 21.0),
    Case("kohya/inside-traceback-through-checkpoint-py", upto(K, 'checkpoint.py", line 488'), TRAIN, 61.0),
    Case(
        "kohya/oom-traceback-keeps-stage",
        fixture(K),
        TRAIN,
        61.0,
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0...",
    ),
    # --- SimpleTuner (coloured logger) -------------------------------------------------------------------
    Case("simpletuner/t5-shards", upto(S, "Loading checkpoint shards: 100%"), PRE, None),
    Case("simpletuner/vae-cache-bucket", upto(S, "Processing bucket 0.75:  50%"), PRE, None),
    Case(
        "simpletuner/steps-from-epochs", upto(S, "Calculated our maximum training steps at 1000"), PRE, None
    ),
    Case(
        "simpletuner/running-training-block",
        upto(S, "Total optimization steps remaining = 1000"),
        TRAIN,
        None,
    ),
    Case("simpletuner/first-redraw", upto(S, "Epoch 1/25 Steps:   0%"), TRAIN, 0.0),
    Case("simpletuner/epoch-steps-bar", upto(S, "| 137/1000 ["), TRAIN, 13.7),
    Case("simpletuner/validation-images", upto(S, "Generating validation images:  50%"), VAL, 25.0),
    Case("simpletuner/validation-pipeline-bar", upto(S, "| 10/20 [", 2), VAL, 25.0),
    Case(
        "simpletuner/saving-state",
        upto(S, "Saving current state to output/models/checkpoint-500"),
        SAVE,
        50.0,
    ),
    Case("simpletuner/state-saved", upto(S, "Random states saved in"), SAVE, 50.0),
    Case("simpletuner/ansi-stripped", fixture(S), TRAIN, 52.3),
    # --- Hugging Face Trainer, raw capture (\r-joined redraws, cursor moves) ------------------------------
    Case("hf-raw/shards", upto(HR, "Loading checkpoint shards: 100%"), PRE, None),
    Case("hf-raw/datasets-map", upto(HR, "Map: 100%"), PRE, None),
    Case("hf-raw/tokenizing-train-dataset", upto(HR, "Tokenizing train dataset: 100%"), PRE, None),
    Case("hf-raw/gradient-checkpointing-warning", upto(HR, "Setting `use_cache=False`."), PRE, None),
    Case("hf-raw/bar-without-description", upto(HR, "| 0/750 ["), TRAIN, 0.0),
    Case("hf-raw/loss-dict", upto(HR, "'epoch': 0.04}"), TRAIN, 100 * 10 / 750),
    Case("hf-raw/eval-bar-is-not-run-progress", upto(HR, "| 16/32 ["), VAL, 100 * 250 / 750),
    Case("hf-raw/eval-bar-finished", upto(HR, "| 32/32 ["), VAL, 100 * 250 / 750),
    Case("hf-raw/eval-results", upto(HR, "'eval_loss'"), VAL, 100 * 250 / 750),
    Case("hf-raw/training-resumes", upto(HR, "| 260/750 ["), TRAIN, 100 * 260 / 750),
    # --- Hugging Face Trainer, info verbosity ------------------------------------------------------------
    Case("hf-info/running-training", upto(HI, "Total optimization steps = 500"), TRAIN, None),
    Case("hf-info/running-evaluation", upto(HI, "***** Running Evaluation *****"), VAL, 50.0),
    Case("hf-info/eval-bar", upto(HI, "| 12/25 ["), VAL, 50.0),
    Case(
        "hf-info/saving-model-checkpoint",
        upto(HI, "Saving model checkpoint to ./out/checkpoint-250"),
        SAVE,
        50.0,
    ),
    Case("hf-info/config-dump-during-save", upto(HI, '"use_sliding_window": false,'), SAVE, 50.0),
    Case(
        "hf-info/tokenizer-files-saved",
        upto(HI, "Special tokens file saved in ./out/checkpoint-250"),
        SAVE,
        50.0,
    ),
    Case("hf-info/resumed", upto(HI, "| 300/500 ["), TRAIN, 60.0),
    Case("hf-info/deleting-older-checkpoint", upto(HI, "Deleting older checkpoint"), SAVE, 100.0),
    Case(
        "hf-info/loading-best-model-is-not-preprocessing", upto(HI, "Loading best model from"), TRAIN, 100.0
    ),
    # --- PyTorch Lightning ---------------------------------------------------------------------------------
    Case("lightning/sanity-check", upto(LT, "Sanity Checking DataLoader 0:  50%"), VAL, None),
    Case("lightning/epoch-0-bar-run-length-unknown", upto(LT, "Epoch 0:  45%"), TRAIN, None),
    Case("lightning/validation-dataloader", upto(LT, "Validation DataLoader 0:  40%"), VAL, None),
    Case("lightning/crlf-end", fixture(LT), TRAIN, None),
    Case("lightning-rich/epoch-1-of-0..9", upto(LR, "Epoch 1/9"), TRAIN, 20.0),
    Case("lightning-rich/validation", upto(LR, "Validation ━", 2), VAL, 20.0),
    Case("lightning-rich/epoch-3-counted-from-0", fixture(LR), TRAIN, 34.5),
    # --- diffusers DreamBooth LoRA + accelerate ------------------------------------------------------------
    Case("diffusers/running-training", upto(D, "Total optimization steps = 500"), TRAIN, None),
    Case("diffusers/saving-current-state", upto(D, "Saving current state to"), SAVE, 20.0),
    Case("diffusers/saved-state", upto(D, "Saved state to"), SAVE, 20.0),
    Case(
        "diffusers/running-validation",
        upto(D, "Running validation..."),
        VAL,
        25.0,
        "10/05/2024 15:00:17 - INFO - __main__ - Running validation...",
    ),
    Case("diffusers/generating-images", upto(D, "Generating 4 images"), VAL, 25.0),
    Case(
        "diffusers/loading-pipeline-inside-validation",
        upto(D, "Loading pipeline components...:  43%"),
        VAL,
        25.0,
    ),
    Case("diffusers/resumed", fixture(D), TRAIN, 30.0),
    # --- excerpts of real captured logs (fixtures/logs/real_*.log, provenance in SOURCES.md) --------------
    Case("real/kohya-logger-line-glued-to-first-redraw", upto(RK, "[00:00<?, ?it/s]"), TRAIN, 0.0, LAST),
    Case("real/kohya-epoch-line-does-not-beat-steps-bar", fixture(RK), TRAIN, 0.0),
    Case("real/ray-training-ends", upto(RR, "| 2999/3000 ["), TRAIN, 99.966667),
    Case("real/ray-log-line-glued-to-last-redraw", upto(RR, "Saving embeddings", 1), SAVE, 100.0),
    Case("real/ray-sampler-state-is-not-sampling", upto(RR, "Sampler state for dataloader 0"), SAVE, 100.0),
    Case(
        "real/ray-pipeline-loading-after-training",
        upto(RR, "Loading pipeline components...: 100%"),
        TRAIN,
        100.0,
    ),
    Case(
        "real/ray-pipeline-saved",
        upto(RR, "Configuration saved in /tmp/textual_inversion_cat/model_index.json"),
        SAVE,
        100.0,
    ),
    # --- the reference system's plain lines and general shapes ---------------------------------------------
    Case("seed/step", "step 1500/5000", TRAIN, 30.0),
    Case("seed/step-with-loss", "Step 1500/5000 - loss: 0.0234", TRAIN, 30.0),
    Case("seed/epoch", "epoch 3/10", TRAIN, 30.0),
    Case("seed/Epoch", "Epoch 3/10", TRAIN, 30.0),
    Case("plain/epoch-and-global-step", "[Epoch 2/10][Step 150/1000] loss=0.3", TRAIN, 15.0),
    Case("plain/epoch-and-step-within-epoch", "Epoch 2/10 Step 50/100 loss: 0.21", TRAIN, 15.0),
    Case("plain/iteration", "Iteration 250/1000, lr 1e-4", TRAIN, 25.0),
    Case(
        "tqdm/rounded-100%-is-2718-of-2720",
        "flux_train_replicate: 100%|█████████▉| 2718/2720 [45:18<00:02,  1.00s/it, "
        "lr: 4.0e-04 loss: 2.104e-01]",
        TRAIN,
        100 * 2718 / 2720,
    ),
    Case(
        "tqdm/cr-joined-redraws-in-one-line",
        "steps:  30%|███       | 300/1000 [05:00<11:40,  1.00it/s, avr_loss=0.1]"
        "\rsteps:  30%|███       | 301/1000 [05:01<11:39,  1.00it/s, avr_loss=0.1]"
        "\rsteps:  30%|███       | 302/1000 [05:02<11:38,  1.00it/s, avr_loss=0.1]",
        TRAIN,
        30.2,
        "steps:  30%|███       | 302/1000 [05:02<11:38,  1.00it/s, avr_loss=0.1]",
    ),
    Case(
        "tqdm/simpletuner-issue-example",
        "Epoch 3/10, Steps:  45%|████▌     | 450/1000 [07:30<09:10,  1.00it/s]",
        TRAIN,
        45.0,
    ),
    Case(
        "tqdm/unknown-name-is-the-run",
        "my-lora-v2:  45%|████▌     | 450/1000 [07:30<09:10,  1.00it/s]",
        TRAIN,
        45.0,
    ),
    Case(
        "tqdm/validation-steps-bar",
        "steps:  50%|█████     | 500/1000 [08:20<08:20,  1.00it/s]\n"
        "validation steps:  20%|██        | 2/10 [00:01<00:04,  2.00it/s]",
        VAL,
        50.0,
    ),
    Case(
        "tqdm/hub-download-bars",
        "Fetching 4 files:  25%|██▌       | 1/4 [00:12<00:36, 12.1s/it]\n"
        "model-00001-of-00004.safetensors:  45%|████▌     | 2.23G/4.98G [00:10<00:12, 223MB/s]",
        PRE,
        None,
    ),
    Case(
        "tqdm/loading-shards-alone",
        "Loading checkpoint shards: 100%|██████████| 3/3 [00:10<00:00,  3.41s/it]",
        PRE,
        None,
    ),
    Case("lines/crlf", "epoch 1/3\r\nstep 10/100\r\nstep 20/100\r\n", TRAIN, 20.0, "step 20/100"),
    Case(
        "lines/ansi-colours",
        "step 1000/4000\n"
        "\x1b[32m2024-10-05 14:02:11,482 [INFO]\x1b[0m \x1b[1mSaving checkpoint to /out/ckpt-1000.pt\x1b[0m",
        SAVE,
        25.0,
        "2024-10-05 14:02:11,482 [INFO] Saving checkpoint to /out/ckpt-1000.pt",
    ),
    Case("lines/warming-up", "Loading model weights\nWarming up the model...", WARMUP, None),
    Case(
        "tqdm/warmup-bar-is-not-run-progress",
        "Warmup:  40%|████      | 40/100 [00:20<00:30,  2.00it/s]",
        WARMUP,
        None,
    ),
    Case(
        "lines/warmup-in-config-is-not-warmup",
        "Preprocessing dataset...\n--lr_warmup_steps=100\nwarmup_ratio: 0.03\n"
        "lr_scheduler_type=cosine_with_warmup,",
        PRE,
        None,
        "lr_scheduler_type=cosine_with_warmup,",
    ),
    Case(
        "lines/gradient-checkpointing-is-not-a-save",
        "step 10/100\nEnabling gradient checkpointing",
        TRAIN,
        10.0,
    ),
    Case(
        "lines/userwarning-about-checkpoint",
        "step 30/100\n/usr/lib/python3.11/site-packages/torch/utils/checkpoint.py:464: UserWarning: "
        "torch.utils."
        "checkpoint: the use_reentrant parameter should be passed explicitly.\nwarnings.warn(",
        TRAIN,
        30.0,
        "warnings.warn(",
    ),
    Case(
        "lines/traceback-during-validation",
        "Steps:  40%|████      | 200/500 [02:04<03:06,  1.61it/s, loss=0.0711, lr=0.0001]\n"
        "Running validation...\nTraceback (most recent call last):\n"
        'File "/src/train.py", line 1020, in main\nsave_checkpoint(model)\n'
        'File "/usr/lib/python3.11/site-packages/torch/utils/checkpoint.py", line 264, in forward\n'
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        VAL,
        40.0,
        "RuntimeError: CUDA error: an illegal memory access was encountered",
    ),
    Case(
        "lines/long-last-line-truncated",
        "step 7/10\n" + "x" * 120,
        TRAIN,
        70.0,
        "x" * 77 + "...",
    ),
    Case(
        "lines/trailing-blank-and-escape-only-lines",
        "step 5/10\n\x1b[0m\n   \n\t\n",
        TRAIN,
        50.0,
        "step 5/10",
    ),
    Case("empty/none", None, None, None, None),
    Case("empty/empty-string", "", None, None, None),
    Case("empty/whitespace", "   \n\n \r\n ", None, None, None),
    Case("empty/unrelated-text", "hello world\nnothing to see here", None, None, "nothing to see here"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parse_logs_table(case: Case) -> None:
    check(case)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------ extra fields


def test_flux_bar_fields() -> None:
    got = parse_logs(
        "flux_train_replicate:  30%|███       | 300/1000 [05:00<11:40,  1.00s/it, "
        "lr: 4.0e-04 loss: 3.512e-01]"
    )
    assert (got.stage, got.progress, got.step, got.total_steps) == (TRAIN, 30.0, 300, 1000)
    assert got.rate == pytest.approx(1.0)
    assert got.eta_seconds == 700.0
    assert got.loss == pytest.approx(0.3512)


def test_seconds_per_iteration_becomes_iterations_per_second() -> None:
    got = parse_logs("steps:  10%|█         | 100/1000 [04:10<37:30,  2.50s/it, avr_loss=0.0965]")
    assert got.rate == pytest.approx(0.4)
    assert got.eta_seconds == 37 * 60 + 30
    assert got.loss == pytest.approx(0.0965)


def test_hours_in_eta() -> None:
    got = parse_logs("Steps:   0%|          | 2/3000 [01:10<28:13:25, 33.89s/it, loss=0.146, lr=0.002]")
    assert got.eta_seconds == 28 * 3600 + 13 * 60 + 25
    assert got.loss == pytest.approx(0.146)


def test_loss_from_hf_dicts_and_eval_loss_ignored() -> None:
    got = parse_logs(upto(HR, "'eval_loss'"))
    assert got.loss is not None and 1.0 < got.loss < 2.0  # the last training loss, not eval_loss
    assert got.step == 250 and got.total_steps == 750


def test_validation_keeps_training_fields() -> None:
    got = parse_logs(upto(A, "Generating Images:  50%", 2))
    assert (got.step, got.total_steps) == (99, 300)
    assert got.loss is not None


def test_lightning_rich_global_step_and_eta() -> None:
    got = parse_logs(fixture(LR))
    assert (got.step, got.total_steps) == (345, 1000)
    assert got.rate == pytest.approx(9.8)
    assert got.eta_seconds == pytest.approx((1000 - 345) / 9.8, abs=1)
    assert got.loss == pytest.approx(0.75)


def test_diverged_loss_is_not_replaced_by_a_stale_one() -> None:
    log = (
        "Steps:   0%|          | 3/3000 [01:30<22:57:31, 27.58s/it, loss=0.0955, lr=0.002]\n"
        "Steps:   0%|          | 4/3000 [01:30<14:00:18, 16.83s/it, loss=nan, lr=0.002]"
    )
    got = parse_logs(log)
    assert got.progress == pytest.approx(100 * 4 / 3000, abs=1e-4)
    assert got.loss is None


def test_job_id_passes_through_and_defaults_to_none() -> None:
    assert parse_logs("step 1/2", job_id="abc").job_id == "abc"
    assert parse_logs("step 1/2").job_id is None


def test_bytes_are_decoded_not_rejected() -> None:
    got = parse_logs(b"step 3/4\n")  # type: ignore[arg-type]
    assert got.progress == 75.0


# ----------------------------------------------------------------------------------- tail-only reading


def _long_log(train_frames: int, tail: str) -> str:
    frames = "".join(
        f"flux_train_replicate:  {i * 100 // 5000:2d}%|███       | {i}/5000 [05:00<11:40,  1.00s/it, "
        f"lr: 4.0e-04 loss: 3.512e-01]\n"
        for i in range(1, train_frames + 1)
    )
    return frames + tail


def test_training_bar_found_behind_a_long_validation_phase() -> None:
    validation = "".join(
        f"Generating Images:  {k * 100 // 80:2d}%|█         | {k}/80 [00:12<01:48, 12.0s/it]\n"
        + "".join(f"{n * 100 // 28:3d}%|██▌       | {n}/28 [00:03<00:09,  2.31it/s]\n" for n in range(29))
        for k in range(80)
    )
    assert len(validation) > 100_000  # far more than the first chunk read
    got = parse_logs(_long_log(2000, validation))
    assert got.stage == VAL
    assert got.progress == pytest.approx(40.0)


def test_reads_only_a_bounded_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 40 MB log costs what its last MAX_SCAN characters cost; no whole-text splitting."""
    big = "x" * (40 << 20) + "\n" + _long_log(50, "Saving at step 50\n")
    seen: list[int] = []
    real = Scanner.feed

    def counting(self: Scanner, lines: list[str], i: int) -> Fed:
        fed = real(self, lines, i)
        seen.extend(len(line) + 1 for line in lines[fed.oldest_read : i + 1])
        return fed

    monkeypatch.setattr(Scanner, "feed", counting)
    got = parse_logs(big)
    assert got.stage == SAVE and got.progress == pytest.approx(1.0)
    assert sum(seen) <= MAX_SCAN


def _peak_bytes(fn: Callable[[], object]) -> int:
    """Peak Python allocation while `fn` runs: a whole-text split or copy of a big log shows up here."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cost_does_not_grow_with_length() -> None:
    """32 MB of head costs nothing more than the tail: no split, copy or scan of the whole text.

    (How fast is bench/'s question: `python -m bench logparse`.)
    """
    tail = _long_log(3000, "Generating Images:  50%|█████     | 1/2 [00:12<00:12, 12.0s/it]\n")
    small, big = tail, "loading weights\n" * 2_000_000 + tail  # ~32 MB of head
    assert parse_logs(big).progress == parse_logs(small).progress
    assert _peak_bytes(lambda: parse_logs(big)) < _peak_bytes(lambda: parse_logs(small)) + (1 << 20)


def test_hundred_megabyte_single_line_is_bounded() -> None:
    line = "a" * (100 << 20)
    got = parse_logs(line)
    assert got.stage is None and got.progress is None
    assert got.last_log == "a" * 77 + "..."
    assert _peak_bytes(lambda: parse_logs(line)) < 8 << 20, "a 100 MB line was copied or split whole"


def test_pathological_bar_lines_do_not_backtrack() -> None:
    hostile = (
        ("9%|" + "|" * 5000 + " 1/" * 3000 + "[" * 2000 + "\n") * 50
        + ("1%|" + "x" * 5000 + "\n") * 100
        + ("━" * 5000 + " • 1/2\n") * 100
        + ("9" * 4000 + "%|\n") * 100
        + "%|" * 200_000
    )
    # Milliseconds when linear; a backtracking pattern would take hours. Wait generously, then say so.
    worker = threading.Thread(target=parse_logs, args=(hostile,), daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), (
        f"parse_logs did not finish a hostile 2 MB log in {DEADLINE:g} s: a pattern backtracks"
    )


# ------------------------------------------------------------------------------------- property test


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=200),
            st.sampled_from(
                [
                    "steps:  45%|████▌     | 450/1000 [07:30<09:10,  1.00it/s, avr_loss=0.1]",
                    " 50%|█████     | 16/32 [00:02<00:02,  7.91it/s]",
                    "Epoch 3/9  ━━━━━━━━━━━━━━━━━━━━╸━━━━━━━━━━━━━━━━━━━ 45/100 0:00:10 • 0:00:12 4.50it/s",
                    "{'loss': nan, 'epoch': 1e308}",
                    "step 99999999999/1",
                    "epoch 0/0",
                    "Traceback (most recent call last):",
                    "Saving checkpoint to x",
                    "\x1b[31m\x1b]0;title\x07",
                    "Epoch 1:  50% 1/2 [00:00<00:00,  2.10it/s]",
                    "Validation: |          | 0/? [00:00<?, ?it/s]",
                    "  0%|          | 0/57 [00:00<?, ?it/s]100%|██████████| 57/57 [00:19<00:00,  2.93it/s]",
                    "#015 45%|████▌     | 45/100 [00:04<00:05,  9.80it/s]#033[A",
                    "Training has completed.",
                    " -> global_step = 9, max_train_steps = 3",
                    "step 12 - loss nan",
                    "{'loss': 0.5, 'global_step/max_steps': '7/0'}",
                    "`Trainer.fit` stopped: `max_epochs=0` reached.",
                    "\u2028\x85\x0b\x00",
                ]
            ),
        ),
        max_size=30,
    ),
    st.sampled_from(["\n", "\r", "\r\n", ""]),
)
def test_any_text_gives_a_sane_answer(parts: list[str], sep: str) -> None:
    was = logparse._STRICT
    logparse._STRICT = True  # surface internal errors instead of the defensive fallback
    try:
        got = parse_logs(sep.join(parts))
    finally:
        logparse._STRICT = was
    assert got.progress is None or (0.0 <= got.progress <= 100.0 and not math.isnan(got.progress))
    assert got.last_log is None or (0 < len(got.last_log) <= 80)
    assert got.stage in (None, PRE, WARMUP, TRAIN, VAL, SAVE)
    assert got.loss is None or math.isfinite(got.loss)
    assert got.rate is None or (math.isfinite(got.rate) and got.rate > 0)
