from __future__ import annotations

from pathlib import Path

import pytest

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import DEFAULT_POLL_INTERVAL, default_store_path, load_settings

YAML = """
background:
  job_status_polling:
    enabled: true
    interval_seconds: 45
"""


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobwidget.yaml"
    path.write_text(text)
    return path


def test_defaults():
    s = load_settings(env={})
    assert (s.poll_interval, s.poll_enabled, s.progress_interval) == (DEFAULT_POLL_INTERVAL, True, 5.0)
    assert s.store == str(default_store_path()) and s.sources["poll_interval"] == "default"
    assert load_settings(env={}, demo=True).store.endswith("jobs-sim.sqlite3")


def test_precedence_argument_env_yaml_default(tmp_path: Path):
    cfg = _yaml(tmp_path, YAML)
    assert load_settings(config=cfg, env={}).poll_interval == 45
    env = {"SIMPLETUNER_JOB_POLL_INTERVAL": "60"}
    assert load_settings(config=cfg, env=env).poll_interval == 60  # the reference system's alias beats YAML
    env["JOBWIDGET_POLL_INTERVAL"] = "20"
    s = load_settings(config=cfg, env=env)
    assert s.poll_interval == 20 and s.sources["poll_interval"] == "env JOBWIDGET_POLL_INTERVAL"
    s = load_settings(config=cfg, env=env, poll_interval=5)
    assert s.poll_interval == 5 and s.sources["poll_interval"] == "argument"
    # JOBWIDGET_CONFIG is read when no config argument is given
    assert load_settings(env={"JOBWIDGET_CONFIG": str(cfg)}).poll_interval == 45
    # a mapping works as config too
    assert (
        load_settings(
            config={"background": {"job_status_polling": {"interval_seconds": 9}}}, env={}
        ).poll_interval
        == 9
    )


def test_webhook_disables_polling_unless_enabled_explicitly(tmp_path: Path):
    hooked = _yaml(tmp_path, "webhook_url: https://example.com/api/webhooks/replicate\n")
    s = load_settings(config=hooked, env={})
    assert s.poll_enabled is False and s.sources["poll_enabled"] == "webhook configured"
    both = _yaml(tmp_path, "webhook_url: https://example.com/hook\n" + YAML)
    assert load_settings(config=both, env={}).poll_enabled is True
    assert load_settings(config=hooked, env={"JOBWIDGET_POLLING": "on"}).poll_enabled is True
    assert load_settings(config=hooked, env={}, poll_enabled=True).poll_enabled is True
    assert load_settings(env={"JOBWIDGET_WEBHOOK_URL": "https://x/hook"}).poll_enabled is False


def test_store_precedence(tmp_path: Path):
    cfg = _yaml(tmp_path, f"store: {tmp_path / 'yaml.sqlite3'}\n")
    assert load_settings(config=cfg, env={}).store == str(tmp_path / "yaml.sqlite3")
    assert load_settings(config=cfg, env={"JOBWIDGET_STORE": "/e.sqlite3"}).store == "/e.sqlite3"
    assert (
        load_settings(config=cfg, env={"JOBWIDGET_STORE": "/e.sqlite3"}, store=":memory:").store == ":memory:"
    )


@pytest.mark.parametrize(
    ("kwargs", "env", "yaml_text", "needle"),
    [
        ({"poll_interval": 0}, {}, None, "poll_interval (argument) must be between"),
        ({"poll_interval": "fast"}, {}, None, "poll_interval (argument) must be a number"),
        (
            {},
            {"JOBWIDGET_POLL_INTERVAL": "abc"},
            None,
            "JOBWIDGET_POLL_INTERVAL (environment) must be a number",
        ),
        ({}, {"SIMPLETUNER_JOB_POLL_INTERVAL": "-3"}, None, "SIMPLETUNER_JOB_POLL_INTERVAL"),
        ({}, {"JOBWIDGET_POLL_INTERVAL": "inf"}, None, "must be between"),
        ({}, {}, "background: {job_status_polling: {interval_seconds: true}}", "interval_seconds"),
        (
            {},
            {},
            "background: {job_status_polling: {enabled: maybe}}",
            "background.job_status_polling.enabled",
        ),
        ({}, {}, "background: [1, 2]", "background.job_status_polling"),
        ({}, {}, "- a list\n- at top\n", "must hold a mapping"),
        ({}, {}, "background: {job_status_polling: {interval_seconds: 30}\n", "not valid YAML"),
        ({}, {}, "pricing: {prices: {gpu-h100: -1}}", "pricing.prices.gpu-h100"),
        ({}, {}, "replicate: {webhook_secret: nope}", "replicate.webhook_secret"),
        ({}, {}, "replicate: {max_requests_per_minute: 0}", "replicate.max_requests_per_minute"),
        ({}, {"JOBWIDGET_POLLING": "perhaps"}, None, "JOBWIDGET_POLLING"),
    ],
)
def test_each_invalid_value_gets_a_clear_error(tmp_path, kwargs, env, yaml_text, needle):
    if yaml_text is not None:
        kwargs = {**kwargs, "config": _yaml(tmp_path, yaml_text)}
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, **kwargs)
    assert needle in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=tmp_path / "nope.yaml", env={})


def test_pricing_overrides_from_yaml(tmp_path: Path):
    cfg = _yaml(tmp_path, "pricing: {prices: {gpu-h100: 0.002}, trainers: {me/trainer: gpu-2x-h100}}\n")
    pricing = load_settings(config=cfg, env={}).pricing
    assert pricing.cost(pricing.sku_for("me/trainer"), 100) == pytest.approx(0.4)
    assert pricing.cost(pricing.sku_for("ostris/flux-dev-lora-trainer"), 100) == pytest.approx(0.2)
