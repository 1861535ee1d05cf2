"""Settings: arguments > environment > YAML config file > defaults, each bad value named clearly.

The reference implementation never read its own YAML or its poll-interval variable; here every source
is read in one place, and `Settings.sources` records where each value came from so errors and the
panel can say so.

YAML shape (the seed's, plus jobwidget's own keys):

    background:
      job_status_polling: {enabled: true, interval_seconds: 30}
      inline_progress: {interval_seconds: 5}
    webhook_url: https://example.com/api/webhooks/replicate   # also replicate.webhook_url
    replicate: {webhook_secret: whsec_..., max_requests_per_minute: 3000, max_concurrency: 16}
    pricing: {prices: {gpu-h100: 0.001525}, trainers: {owner/name: gpu-h100}, default_sku: gpu-l40s}
    store: ~/path/to/jobs.sqlite3
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from jobwidget.core.errors import ConfigError
from jobwidget.core.pricing import Pricing

__all__ = ["Settings", "default_store_path", "load_settings"]

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_PROGRESS_INTERVAL = 5.0
POLL_INTERVAL_ENV = (
    "JOBWIDGET_POLL_INTERVAL",
    "SIMPLETUNER_JOB_POLL_INTERVAL",
)  # ours first, the seed's alias


@dataclass(frozen=True)
class Settings:
    store: str
    poll_enabled: bool
    poll_interval: float
    progress_interval: float
    webhook_url: str | None
    webhook_secret: str | None = field(default=None, repr=False)
    max_requests_per_minute: float = 3000.0
    max_concurrency: int = 16
    pricing: Pricing = field(default_factory=Pricing)
    config_path: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)


def default_store_path(provider_name: str = "replicate", demo: bool = False) -> Path:
    """The user data dir; the simulated provider gets a file of its own so demo jobs never mix in."""
    base = Path(platformdirs.user_data_dir("jobwidget", appauthor=False))
    return base / ("jobs-sim.sqlite3" if demo else f"jobs-{provider_name}.sqlite3")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (from Jobs(config=...) or JOBWIDGET_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def _dig(data: Mapping[str, Any], dotted: str, where: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if node is None:
            return None
        if not isinstance(node, Mapping):
            raise ConfigError(f"{dotted} in {where}: expected a mapping at {part!r}, got {node!r}")
        node = node.get(part)
    return node


def _number(value: Any, name: str, where: str, *, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} ({where}) must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} ({where}) must be a number, got {value!r}") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ConfigError(f"{name} ({where}) must be between {minimum:g} and {maximum:g}, got {value!r}")
    return number


def _bool(value: Any, name: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} ({where}) must be true or false, got {value!r}")


def load_settings(
    *,
    store: str | os.PathLike[str] | None = None,
    poll_interval: float | None = None,
    poll_enabled: bool | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    provider_name: str = "replicate",
    demo: bool = False,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting. `config` is a YAML path or an already-parsed mapping."""
    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    config_path: Path | None = None
    if isinstance(config, Mapping):
        data, where = dict(config), "Jobs(config={...})"
    else:
        raw = config if config is not None else env.get("JOBWIDGET_CONFIG")
        if raw:
            config_path = Path(raw).expanduser()
            data, where = _read_yaml(config_path), str(config_path)
        else:
            data, where = {}, "defaults"
    yaml_where = f"config {where}"

    # Store path.
    if store is not None:
        store_value, sources["store"] = str(store), "argument"
    elif env.get("JOBWIDGET_STORE"):
        store_value, sources["store"] = env["JOBWIDGET_STORE"], "env JOBWIDGET_STORE"
    elif data.get("store"):
        store_value, sources["store"] = str(Path(str(data["store"])).expanduser()), yaml_where
    else:
        store_value, sources["store"] = str(default_store_path(provider_name, demo)), "default"

    # Webhook: a configured one turns polling off unless polling is enabled explicitly (SPEC §5).
    webhook_url = _dig(data, "webhook_url", yaml_where) or _dig(data, "replicate.webhook_url", yaml_where)
    webhook_url = env.get("JOBWIDGET_WEBHOOK_URL") or webhook_url
    if webhook_url is not None and not isinstance(webhook_url, str):
        raise ConfigError(f"webhook_url ({yaml_where}) must be a URL string, got {webhook_url!r}")
    webhook_secret = env.get("JOBWIDGET_WEBHOOK_SECRET") or _dig(data, "replicate.webhook_secret", yaml_where)
    if webhook_secret is not None and not (
        isinstance(webhook_secret, str) and webhook_secret.startswith("whsec_")
    ):
        raise ConfigError(f"replicate.webhook_secret ({yaml_where}) must be a 'whsec_...' string")

    # Poll interval: argument > env (ours, then the seed's alias) > YAML > default.
    yaml_interval = _dig(data, "background.job_status_polling.interval_seconds", yaml_where)
    if poll_interval is not None:
        interval = _number(poll_interval, "poll_interval", "argument", minimum=0.05, maximum=86_400)
        sources["poll_interval"] = "argument"
    elif any(env.get(name) for name in POLL_INTERVAL_ENV):
        name = next(n for n in POLL_INTERVAL_ENV if env.get(n))
        interval = _number(env[name], name, "environment", minimum=0.05, maximum=86_400)
        sources["poll_interval"] = f"env {name}"
    elif yaml_interval is not None:
        interval = _number(
            yaml_interval,
            "background.job_status_polling.interval_seconds",
            yaml_where,
            minimum=0.05,
            maximum=86_400,
        )
        sources["poll_interval"] = yaml_where
    else:
        interval, sources["poll_interval"] = DEFAULT_POLL_INTERVAL, "default"

    yaml_enabled = _dig(data, "background.job_status_polling.enabled", yaml_where)
    env_enabled = env.get("JOBWIDGET_POLLING")
    if poll_enabled is not None:
        enabled, sources["poll_enabled"] = bool(poll_enabled), "argument"
    elif env_enabled:
        enabled = _bool(env_enabled, "JOBWIDGET_POLLING", "environment")
        sources["poll_enabled"] = "env JOBWIDGET_POLLING"
    elif yaml_enabled is not None:
        enabled = _bool(yaml_enabled, "background.job_status_polling.enabled", yaml_where)
        sources["poll_enabled"] = yaml_where
    else:
        enabled = not webhook_url
        sources["poll_enabled"] = "webhook configured" if webhook_url else "default"

    progress_raw = env.get("JOBWIDGET_PROGRESS_INTERVAL") or _dig(
        data, "background.inline_progress.interval_seconds", yaml_where
    )
    progress_interval = (
        DEFAULT_PROGRESS_INTERVAL
        if progress_raw is None
        else _number(
            progress_raw, "background.inline_progress.interval_seconds", where, minimum=0.05, maximum=86_400
        )
    )

    rpm_raw = _dig(data, "replicate.max_requests_per_minute", yaml_where)
    rpm = (
        3000.0
        if rpm_raw is None
        else _number(rpm_raw, "replicate.max_requests_per_minute", yaml_where, minimum=1)
    )
    conc_raw = _dig(data, "replicate.max_concurrency", yaml_where)
    concurrency = (
        16
        if conc_raw is None
        else int(_number(conc_raw, "replicate.max_concurrency", yaml_where, minimum=1, maximum=256))
    )

    pricing_raw = data.get("pricing")
    if pricing_raw is not None and not isinstance(pricing_raw, Mapping):
        raise ConfigError(f"pricing ({yaml_where}) must be a mapping")
    try:
        pricing = Pricing.from_config(pricing_raw)
    except ValueError as exc:
        raise ConfigError(f"{exc} ({yaml_where})") from None

    return Settings(
        store=store_value,
        poll_enabled=enabled,
        poll_interval=interval,
        progress_interval=progress_interval,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        max_requests_per_minute=rpm,
        max_concurrency=concurrency,
        pricing=pricing,
        config_path=config_path,
        sources=sources,
    )
