from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobwidget.core.errors import ConfigError
from jobwidget.engine.config import DEFAULT_POLL_INTERVAL, SETTINGS, default_store_path, load_settings
from jobwidget.engine.configfile import CONFIG_NAMES, user_config_dir

from .paths import REPO

YAML = """
background:
  job_status_polling:
    enabled: true
    interval_seconds: 45
"""


def _yaml(tmp_path: Path, text: str, name: str = "jobwidget.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    data: Any = value
    for part in reversed(dotted.split(".")):
        data = {part: data}
    return data


def _records(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def test_defaults():
    s = load_settings(env={})
    assert (s.poll_interval, s.poll_enabled, s.progress_interval) == (DEFAULT_POLL_INTERVAL, True, 5.0)
    assert s.store == str(default_store_path()) and s.sources["poll_interval"] == "default"
    assert s.config_path is None and s.config_origin == "none" and dict(s.ignored) == {}
    assert load_settings(env={}, demo=True).store.endswith("jobs-sim.sqlite3")


def test_precedence_argument_env_yaml_default(tmp_path: Path):
    cfg = _yaml(tmp_path, YAML)
    assert load_settings(config=cfg, env={}).poll_interval == 45
    env = {"SIMPLETUNER_JOB_POLL_INTERVAL": "60"}
    assert load_settings(config=cfg, env=env).poll_interval == 60  # the older variable name beats YAML
    env["JOBWIDGET_POLL_INTERVAL"] = "20"
    s = load_settings(config=cfg, env=env)
    assert s.poll_interval == 20 and s.sources["poll_interval"] == "env JOBWIDGET_POLL_INTERVAL"
    s = load_settings(config=cfg, env=env, poll_interval=5)
    assert s.poll_interval == 5 and s.sources["poll_interval"] == "argument"
    # JOBWIDGET_CONFIG is read when no config argument is given
    assert load_settings(env={"JOBWIDGET_CONFIG": str(cfg)}).poll_interval == 45
    # a mapping works as config too
    s = load_settings(config={"background": {"job_status_polling": {"interval_seconds": 9}}}, env={})
    assert s.poll_interval == 9
    assert (
        s.sources["poll_interval"] == "background.job_status_polling.interval_seconds in Jobs(config={...})"
    )


def test_webhook_disables_polling_unless_enabled_explicitly(tmp_path: Path):
    hooked = _yaml(tmp_path, "webhook_url: https://example.com/api/webhooks/replicate\n")
    s = load_settings(config=hooked, env={})
    assert (
        s.poll_enabled is False and s.sources["poll_enabled"] == "default (off: a webhook URL is configured)"
    )
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
    with pytest.raises(ConfigError, match=r"does not exist \(from Jobs\(config=\.\.\.\)\)"):
        load_settings(config=tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match=r"does not exist \(from JOBWIDGET_CONFIG\)"):
        load_settings(env={"JOBWIDGET_CONFIG": str(tmp_path / "nope.yaml")})


def test_pricing_overrides_from_yaml(tmp_path: Path):
    cfg = _yaml(tmp_path, "pricing: {prices: {gpu-h100: 0.002}, trainers: {me/trainer: gpu-2x-h100}}\n")
    pricing = load_settings(config=cfg, env={}).pricing
    assert pricing.cost(pricing.sku_for("me/trainer"), 100) == pytest.approx(0.4)
    assert pricing.cost(pricing.sku_for("ostris/flux-dev-lora-trainer"), 100) == pytest.approx(0.2)


# -- every invalid value names its real source ----------------------------------------------------

# An invalid value for each setting, as an environment string would carry it (YAML gets the same text).
_BAD: dict[str, Any] = {
    "store": 5,  # only YAML can hold a non-path; any non-empty environment string is a path
    "webhook_url": "ftp://example.com/hook",
    "webhook_secret": "sekrit_value",
    "poll_interval": "soon",
    "poll_enabled": "maybe",
    "progress_interval": "-1",
    "max_requests_per_minute": "0",
    "max_concurrency": "2.5",
    "pricing": "cheap",
    "health": {"stall_minutes": -5},
    "guards": {"on_nan": "explode"},
    "gc_freeze": "sometimes",
}
_CASES = [
    (row.name, kind, name)
    for row in SETTINGS
    for kind, names in (
        ("argument", (row.argument,) if row.argument else ()),
        ("env", row.env),
        ("yaml", row.yaml),
    )
    for name in names
    if not (kind == "env" and not isinstance(_BAD[row.name], str))
]


def test_the_table_covers_every_setting():
    fields = {f.name for f in dataclasses.fields(load_settings(env={}))}
    assert {row.name for row in SETTINGS} == fields - {"config_path", "config_origin", "sources", "ignored"}
    assert set(_BAD) == {row.name for row in SETTINGS}
    assert len(_CASES) >= 17  # each env name and YAML key (aliases too) is exercised below


@pytest.mark.parametrize(("setting", "kind", "name"), _CASES)
def test_invalid_value_blames_its_real_source(tmp_path: Path, setting: str, kind: str, name: str):
    bad = _BAD[setting]
    # A valid value below the bad one in precedence proves the error is not pinned on the wrong source.
    good_yaml = {
        "store": "jobs.sqlite3",
        "webhook_url": "https://example.com/hook",
        "webhook_secret": "whsec_fine",
        "poll_enabled": True,
        "pricing": {},
    }
    cfg = tmp_path / "cfg.yaml"
    data: dict[str, Any] = {}
    env: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    row = next(r for r in SETTINGS if r.name == setting)
    if kind == "argument":
        kwargs[name] = bad
        label = f"{name} (argument)"
    elif kind == "env":
        env[name] = bad
        label = f"{name} (environment)"
    else:
        data = _nested(name, bad)
        label = f"{name} (config {cfg})"
    if kind != "yaml" and row.yaml:
        data = _nested(row.yaml[0], good_yaml.get(setting, 1))
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_settings(config=cfg, env=env, **kwargs)
    message = str(info.value)
    assert message.startswith(label), message
    if setting == "webhook_secret":
        assert "sekrit" not in message


def test_progress_interval_env_is_blamed_on_the_env_not_the_yaml_key(tmp_path: Path):
    cfg = _yaml(tmp_path, "background: {inline_progress: {interval_seconds: 5}}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config=cfg, env={"JOBWIDGET_PROGRESS_INTERVAL": "abc"})
    assert str(info.value) == "JOBWIDGET_PROGRESS_INTERVAL (environment) must be a number, got 'abc'"
    s = load_settings(config=cfg, env={"JOBWIDGET_PROGRESS_INTERVAL": "2"})
    assert s.progress_interval == 2 and s.sources["progress_interval"] == "env JOBWIDGET_PROGRESS_INTERVAL"


# -- discovery -----------------------------------------------------------------------------------


def test_discovery_order_first_found_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "work"
    user = user_config_dir()
    assert user == tmp_path / "xdg-config" / "jobwidget"  # platformdirs, pointed here by conftest
    work.mkdir()
    user.mkdir(parents=True)
    monkeypatch.chdir(work)
    files = [
        ("argument", _yaml(tmp_path, "job_polling_interval: 11", "arg.yaml")),
        ("env", _yaml(tmp_path, "job_polling_interval: 12", "env.yaml")),
        ("found in the working directory", _yaml(work, "job_polling_interval: 13", CONFIG_NAMES[0])),
        ("found in the working directory", _yaml(work, "job_polling_interval: 14", CONFIG_NAMES[1])),
        ("found in the user config directory", _yaml(user, "job_polling_interval: 15", CONFIG_NAMES[0])),
        ("found in the user config directory", _yaml(user, "job_polling_interval: 16", CONFIG_NAMES[1])),
    ]
    assert CONFIG_NAMES == ("jobwidget.yaml", "simpletuner-enterprise.yaml")
    env = {"JOBWIDGET_CONFIG": str(files[1][1])}
    s = load_settings(config=files[0][1], env=env)
    assert (s.poll_interval, s.config_path, s.config_origin) == (11, files[0][1], "Jobs(config=...)")
    s = load_settings(env=env)
    assert (s.poll_interval, s.config_path, s.config_origin) == (12, files[1][1], "JOBWIDGET_CONFIG")
    for expected, (origin, path) in enumerate(files[2:], start=13):
        s = load_settings(env={})
        assert (s.poll_interval, s.config_path, s.config_origin) == (expected, path, origin)
        assert s.sources["poll_interval"] == f"job_polling_interval in config {path}"
        path.unlink()
    s = load_settings(env={})
    assert (s.poll_interval, s.config_path, s.config_origin) == (30, None, "none")


def test_discovery_skips_directories_and_reports_unreadable_files(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobwidget.yaml").mkdir()  # not a file: not a candidate
    broken = _yaml(tmp_path, "background: {job_status_polling: [\n", CONFIG_NAMES[1])
    with pytest.raises(ConfigError, match=re.escape(f"config file {broken} is not valid YAML")):
        load_settings(env={})


def test_choice_is_logged_once(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    first = _yaml(tmp_path, "job_polling_interval: 40", CONFIG_NAMES[0])
    second = _yaml(tmp_path, "job_polling_interval: 50", CONFIG_NAMES[1])
    caplog.set_level(logging.INFO, logger="jobwidget.config")
    assert load_settings(env={}).poll_interval == 40
    assert load_settings(env={}).poll_interval == 40
    lines = _records(caplog, "configuration from")
    assert lines == [
        f"jobwidget: configuration from {first} (found in the working directory); also present but not "
        f"read (first found wins): {second}"
    ]


# -- the job_polling_interval alias --------------------------------------------------------------


@pytest.mark.parametrize("key", ["job_polling_interval", "background.job_polling_interval"])
def test_job_polling_interval_is_an_alias(tmp_path: Path, key: str):
    cfg = tmp_path / "simpletuner-enterprise.yaml"
    cfg.write_text(yaml.safe_dump(_nested(key, 90)))
    s = load_settings(config=cfg, env={})
    assert s.poll_interval == 90 and s.sources["poll_interval"] == f"{key} in config {cfg}"
    assert dict(s.ignored) == {}
    # the environment and arguments still win over it
    assert load_settings(config=cfg, env={"JOBWIDGET_POLL_INTERVAL": "7"}).poll_interval == 7
    assert load_settings(config=cfg, env={}, poll_interval=3).poll_interval == 3
    cfg.write_text(yaml.safe_dump(_nested(key, "often")))
    with pytest.raises(ConfigError, match=re.escape(f"{key} (config {cfg}) must be a number")):
        load_settings(config=cfg, env={})


def test_canonical_key_beats_the_alias_and_the_loser_is_reported(tmp_path: Path, caplog):
    cfg = _yaml(tmp_path, YAML + "job_polling_interval: 90\n")
    caplog.set_level(logging.WARNING, logger="jobwidget.config")
    s = load_settings(config=cfg, env={})
    assert s.poll_interval == 45
    assert (
        s.ignored["job_polling_interval"]
        == "background.job_status_polling.interval_seconds is also set and wins"
    )
    assert _records(caplog, "job_polling_interval ignored")


# -- keys jobwidget does not use -----------------------------------------------------------------

ENTERPRISE = """
background:
  job_status_polling: {enabled: true, interval_seconds: 30}
  queue_processing: {enabled: true, interval_seconds: 5}
"""


def test_unused_keys_are_reported_once_with_their_path(tmp_path: Path, caplog):
    cfg = _yaml(tmp_path, ENTERPRISE, "simpletuner-enterprise.yaml")
    caplog.set_level(logging.INFO, logger="jobwidget.config")
    s = load_settings(config=cfg, env={})
    assert list(s.ignored) == ["background.queue_processing"]
    assert "no queue" in s.ignored["background.queue_processing"]
    assert s.poll_interval == 30 and s.poll_enabled is True
    load_settings(config=cfg, env={})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert (
        warnings[0].getMessage().startswith(f"jobwidget: config {cfg}: background.queue_processing ignored")
    )
    assert "background.queue_processing" in repr(s)


@pytest.mark.parametrize(
    ("text", "path", "hint"),
    [
        (
            "background: {job_status_poling: {interval_seconds: 5}}",
            "background.job_status_poling",
            "background.job_status_polling",
        ),
        (
            "background: {job_status_polling: {intervall_seconds: 5}}",
            "background.job_status_polling.intervall_seconds",
            "background.job_status_polling.interval_seconds",
        ),
        ("replicate: {max_concurency: 4}", "replicate.max_concurency", "replicate.max_concurrency"),
        ("max_concurrency: 4", "max_concurrency", "replicate.max_concurrency"),  # right name, wrong place
        ("webhook-url: https://example.com/h", "webhook-url", "webhook_url"),
        ("pricing: {price: {gpu-h100: 1}}", "pricing.price", "pricing.prices"),
        ("Store: /tmp/x.sqlite3", "Store", "store"),
    ],
)
def test_typos_get_a_did_you_mean(tmp_path: Path, caplog, text: str, path: str, hint: str):
    cfg = _yaml(tmp_path, text)
    caplog.set_level(logging.WARNING, logger="jobwidget.config")
    s = load_settings(config=cfg, env={})
    assert s.ignored[path] == f"not a jobwidget setting; did you mean {hint}?"
    assert _records(caplog, f"did you mean {hint}?")


def test_unrelated_keys_are_ignored_without_a_guess(tmp_path: Path):
    cfg = _yaml(tmp_path, "auth: {sso: true}\n42: answer\npricing: {prices: {my-own-sku: 0.5}}\n")
    s = load_settings(config=cfg, env={})
    assert dict(s.ignored) == {"auth": "not a jobwidget setting", "42": "not a jobwidget setting"}
    assert s.pricing.prices["my-own-sku"] == 0.5  # free-form contents are not reported


# -- the read-only view --------------------------------------------------------------------------


def test_settings_view_is_read_only_and_shows_every_source(tmp_path: Path):
    cfg = _yaml(tmp_path, ENTERPRISE + "replicate: {webhook_secret: whsec_abc123, max_concurrency: 4}\n")
    s = load_settings(config=cfg, env={"JOBWIDGET_PROGRESS_INTERVAL": "2"}, poll_interval=12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.poll_interval = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.sources["poll_interval"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        s.ignored["x"] = "y"  # type: ignore[index]
    rows = {r["setting"]: r for r in s.rows()}
    assert list(rows) == [row.name for row in SETTINGS]
    assert rows["poll_interval"] == {"setting": "poll_interval", "value": "12.0", "source": "argument"}
    assert rows["progress_interval"]["source"] == "env JOBWIDGET_PROGRESS_INTERVAL"
    assert rows["max_concurrency"] == {
        "setting": "max_concurrency",
        "value": "4",
        "source": f"replicate.max_concurrency in config {cfg}",
    }
    assert rows["webhook_secret"]["value"] == "***"
    text = repr(s)
    assert "whsec_abc123" not in text and "abc123" not in text
    assert text.splitlines()[0] == f"Settings (config file: {cfg} (Jobs(config=...)))"
    for row in SETTINGS:
        assert re.search(rf"^  {row.name} +\S", text, re.M), row.name
    assert s.is_set("max_concurrency") and not s.is_set("max_requests_per_minute")


def test_readme_configuration_table_names_every_setting():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Configuration", 1)[1].split("\n## ", 1)[0]
    for row in SETTINGS:
        for name in (*row.env, *row.yaml):
            assert f"`{name}`" in section, name
    for name in CONFIG_NAMES:
        assert f"`{name}`" in section, name
