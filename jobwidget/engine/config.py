"""Settings as a table: one row per setting, one loop that resolves them all, each value's source kept.

Per setting, the first of these that is set wins: the argument (`Jobs(poll_interval=...)`, a CLI flag),
the environment (its names in order), the configuration file (the row's YAML keys in order: the
canonical key, then aliases), the default. A bad value raises `ConfigError` naming the argument,
variable or key it came from and the file; `Settings.sources` says where each effective value came from.
Which file is read, and what in it goes unused, is `configfile.py`'s concern.

YAML shape (the reference system's enterprise config, plus jobwidget's own keys):

    background:
      job_status_polling: {enabled: true, interval_seconds: 30}
      inline_progress: {interval_seconds: 5}
    job_polling_interval: 30          # alias of the interval above (also under background:)
    webhook_url: https://example.com/api/webhooks/replicate   # also replicate.webhook_url
    replicate: {webhook_secret: whsec_..., max_requests_per_minute: 3000, max_concurrency: 16}
    pricing: {prices: {gpu-h100: 0.001525}, trainers: {owner/name: gpu-h100}, default_sku: gpu-l40s}
    store: ~/path/to/jobs.sqlite3
    health: {stall_minutes: 15, slow_start_minutes: 10, diverging_factor: 3, diverging_window: 12}
    guards: {max_cost_usd: 25, on_nan: cancel, on_stall: notify, dry_run: false, jobs: {<id>: {...}}}
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from jobwidget.core.errors import ConfigError
from jobwidget.core.health import Thresholds
from jobwidget.core.pricing import Pricing
from jobwidget.engine.configfile import ConfigDocument, find_config
from jobwidget.engine.guards import Guard, parse_guards

__all__ = ["SETTINGS", "Setting", "Settings", "default_store_path", "load_settings", "parse_seconds"]

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_PROGRESS_INTERVAL = 5.0


def default_store_path(provider_name: str = "replicate", demo: bool = False) -> Path:
    """The user data dir; the simulated provider gets a file of its own so demo jobs never mix in."""
    base = Path(platformdirs.user_data_dir("jobwidget", appauthor=False))
    return base / ("jobs-sim.sqlite3" if demo else f"jobs-{provider_name}.sqlite3")


# -------------------------------------------------------------------------------------------- parsers
# Each takes the raw value and its label, "NAME (where)", and returns the value or raises ConfigError.


def _number(value: Any, label: str, *, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise ConfigError(f"{label} must be between {minimum:g} and {maximum:g}, got {value!r}")
    return number


def parse_seconds(value: Any, label: str) -> float:
    """An interval: 0.05 s to a day (anything shorter would hammer the provider, longer is a mistake)."""
    return _number(value, label, minimum=0.05, maximum=86_400)


def _flag(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{label} must be true or false, got {value!r}")


def _path(value: Any, label: str) -> str:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ConfigError(f"{label} must be a file path, got {value!r}")
    return os.path.expanduser(str(value).strip())


def _store(value: Any, label: str) -> str:
    """A SQLite file path (expanded) or a PostgreSQL URL (kept as written, never taken for a path)."""
    if isinstance(value, str) and value.strip().lower().startswith(("postgresql://", "postgres://")):
        return value.strip()
    return _path(value, label)


def _url(value: Any, label: str) -> str:
    parts = urlsplit(value.strip()) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{label} must be an http(s) URL, got {value!r}")
    return value.strip()


def _webhook_secret(value: Any, label: str) -> str:
    if not (isinstance(value, str) and value.strip().startswith("whsec_")):
        raise ConfigError(f"{label} must be a 'whsec_...' string")  # never echoed: it is a secret
    return value.strip()


def _rate(value: Any, label: str) -> float:
    return _number(value, label, minimum=1, maximum=1_000_000)


def _concurrency(value: Any, label: str) -> int:
    number = _number(value, label, minimum=1, maximum=256)
    if number != int(number):
        raise ConfigError(f"{label} must be a whole number, got {value!r}")
    return int(number)


def _pricing(value: Any, label: str) -> Pricing:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label} must be a mapping (prices, trainers, default_sku), got {value!r}")
    try:
        return Pricing.from_config(value)
    except ValueError as exc:  # its messages name the key below pricing; the label adds the file
        raise ConfigError(f"{exc} {label.split(' ', 1)[1]}") from None


def _thresholds(value: Any, label: str) -> Thresholds:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{label} must be a mapping (stall_minutes, slow_start_minutes, ...), got {value!r}"
        )
    try:
        return Thresholds.from_mapping(value)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _guards(value: Any, label: str) -> tuple[Guard, ...]:
    try:
        return parse_guards(value)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


# -------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class _Context:
    provider_name: str
    demo: bool
    values: Mapping[str, Any]  # the rows resolved so far


@dataclass(frozen=True, slots=True)
class Setting:
    """One row: how a setting is given, read and defaulted."""

    name: str  # the `Settings` attribute
    help: str
    parse: Callable[[Any, str], Any]
    default: Any = None
    argument: str | None = None  # keyword of load_settings / Jobs
    env: tuple[str, ...] = ()  # first set wins
    yaml: tuple[str, ...] = ()  # canonical key first, then aliases
    free_form: tuple[str, ...] = ()  # keys under this one whose contents are the parser's to check
    derive: Callable[[_Context], tuple[Any, str]] | None = None  # a default that depends on others
    secret: bool = False


def _default_store(ctx: _Context) -> tuple[Any, str]:
    return str(default_store_path(ctx.provider_name, ctx.demo)), "default"


def _default_polling(ctx: _Context) -> tuple[Any, str]:
    if ctx.values.get("webhook_url"):
        return False, "default (off: a webhook URL is configured)"
    return True, "default"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "store",
        "job store: a SQLite path (':memory:' for throwaway use) or a postgresql:// URL (a team store)",
        _store,
        argument="store",
        env=("JOBWIDGET_STORE",),
        yaml=("store",),
        derive=_default_store,
    ),
    Setting(
        "webhook_url",
        "public URL of the webhook receiver; turns polling off unless enabled explicitly",
        _url,
        env=("JOBWIDGET_WEBHOOK_URL",),
        yaml=("webhook_url", "replicate.webhook_url"),
    ),
    Setting(
        "webhook_secret",
        "webhook signing secret (else fetched from Replicate)",
        _webhook_secret,
        env=("JOBWIDGET_WEBHOOK_SECRET",),
        yaml=("replicate.webhook_secret",),
        secret=True,
    ),
    Setting(
        "poll_interval",
        "seconds between background refreshes of active jobs",
        parse_seconds,
        DEFAULT_POLL_INTERVAL,
        argument="poll_interval",
        env=("JOBWIDGET_POLL_INTERVAL", "SIMPLETUNER_JOB_POLL_INTERVAL"),
        yaml=(
            "background.job_status_polling.interval_seconds",
            "background.job_polling_interval",
            "job_polling_interval",
        ),
    ),
    Setting(
        "poll_enabled",
        "background polling on or off",
        _flag,
        argument="poll_enabled",
        env=("JOBWIDGET_POLLING",),
        yaml=("background.job_status_polling.enabled",),
        derive=_default_polling,
    ),
    Setting(
        "progress_interval",
        "seconds between inline progress reads while a panel is visible",
        parse_seconds,
        DEFAULT_PROGRESS_INTERVAL,
        env=("JOBWIDGET_PROGRESS_INTERVAL",),
        yaml=("background.inline_progress.interval_seconds",),
    ),
    Setting(
        "max_requests_per_minute",
        "Replicate requests per minute, shared by everything in the process",
        _rate,
        3000.0,
        yaml=("replicate.max_requests_per_minute",),
    ),
    Setting(
        "max_concurrency",
        "Replicate requests in flight at once",
        _concurrency,
        16,
        yaml=("replicate.max_concurrency",),
    ),
    Setting(
        "pricing",
        "prices ($/s per hardware SKU) and the trainer -> hardware map",
        _pricing,
        yaml=("pricing",),
        free_form=("prices", "trainers", "default_sku"),
        derive=lambda ctx: (Pricing(), "default"),
    ),
    Setting(
        "health",
        "when run-health flags are raised (stall, slow start, diverging loss)",
        _thresholds,
        yaml=("health",),
        derive=lambda ctx: (Thresholds(), "default"),
    ),
    Setting(
        "guards",
        "opt-in guards that cancel or report jobs (NaN loss, stall, cost limit); none by default",
        _guards,
        (),
        yaml=("guards",),
    ),
    Setting(
        "gc_freeze",
        "opt-in, process-wide: gc.freeze() once the engine starts, so full garbage collections skip "
        "what existed then (cyclic garbage among those objects is never reclaimed); off by default",
        _flag,
        False,
        env=("JOBWIDGET_GC_FREEZE",),
        yaml=("gc_freeze",),
    ),
)


# -------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class Settings:
    """The effective settings, read-only. `sources[name]` says where each came from; `ignored` lists
    the configuration keys that were not used and why; `repr()` shows it all as a table."""

    store: str
    poll_enabled: bool
    poll_interval: float
    progress_interval: float
    webhook_url: str | None
    webhook_secret: str | None = field(default=None, repr=False)
    max_requests_per_minute: float = 3000.0
    max_concurrency: int = 16
    pricing: Pricing = field(default_factory=Pricing)
    health: Thresholds = field(default_factory=Thresholds)
    guards: tuple[Guard, ...] = ()
    gc_freeze: bool = False  # see engine/gc_freeze.py
    config_path: Path | None = None
    config_origin: str = "none"  # how the file was found ("found in the working directory", ...)
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ignored: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # key -> why

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def is_set(self, name: str) -> bool:
        """Whether the setting was given (argument, environment or config file), not defaulted."""
        return not self.source(name).startswith("default")

    def rows(self) -> list[dict[str, str]]:
        """One row per setting: name, value as shown (secrets masked) and source; DataFrame-ready."""
        return [
            {
                "setting": row.name,
                "value": _shown(row, getattr(self, row.name)),
                "source": self.source(row.name),
            }
            for row in SETTINGS
        ]

    def __repr__(self) -> str:
        rows = self.rows()
        width = max(len(r["setting"]) for r in rows)
        value_width = min(40, max(len(r["value"]) for r in rows))
        config = f"{self.config_path} ({self.config_origin})" if self.config_path else self.config_origin
        lines = [f"Settings (config file: {config})"]
        lines += [f"  {r['setting']:<{width}}  {r['value']:<{value_width}}  {r['source']}" for r in rows]
        lines += [f"  ignored: {key} ({why})" for key, why in self.ignored.items()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython: the table, not a dataclass
        printer.text(repr(self))


def _shown(row: Setting, value: Any) -> str:
    if value is None:
        return "None"
    if row.secret:
        return "***"
    if isinstance(value, Pricing):
        default = f", default_sku {value.default_sku}" if value.default_sku else ""
        return f"{len(value.prices)} prices, {len(value.trainers)} trainers{default}"
    if isinstance(value, Thresholds):
        return (
            f"stall {value.stall_minutes:g} min, slow start {value.slow_start_minutes:g} min, "
            f"diverging x{value.diverging_factor:g}"
        )
    if row.name == "store" and "://" in str(value):  # a database URL's password stays out of sight
        parts = urlsplit(str(value))
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[-1]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    if row.name == "guards":
        return "none" if not value else "; ".join(repr(g) for g in value)
    return str(value)


def _resolve(
    row: Setting,
    ctx: _Context,
    arguments: Mapping[str, Any],
    arguments_from: str,
    env: Mapping[str, str],
    doc: ConfigDocument,
) -> tuple[Any, str]:
    if row.argument is not None and arguments.get(row.argument) is not None:
        return row.parse(arguments[row.argument], f"{row.argument} ({arguments_from})"), arguments_from
    for name in row.env:
        raw = env.get(name)
        if raw is not None and raw.strip():
            return row.parse(raw, f"{name} (environment)"), f"env {name}"
    given = [(key, value) for key in row.yaml if (value := doc.get(key)) is not None]
    if given:
        key, value = given[0]
        for shadowed, _ in given[1:]:
            doc.ignored.setdefault(shadowed, f"{key} is also set and wins")
        return row.parse(value, f"{key} ({doc.label})"), f"{key} in {doc.label}"
    if row.derive is not None:
        return row.derive(ctx)
    return row.default, "default"


def load_settings(
    *,
    store: str | os.PathLike[str] | None = None,
    poll_interval: float | None = None,
    poll_enabled: bool | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    provider_name: str = "replicate",
    demo: bool = False,
    env: Mapping[str, str] | None = None,
    arguments_from: str = "argument",
    config_from: str = "Jobs(config=...)",
    cwd: Path | None = None,
    user_dir: Path | None = None,
) -> Settings:
    """Resolve every setting. `config` is a YAML path or an already-parsed mapping; without one the
    file is discovered (see `configfile.find_config`). `arguments_from` names where the keyword
    arguments came from in sources and errors ("argument", "command line")."""
    env = os.environ if env is None else env
    doc = find_config(config, env, config_from=config_from, cwd=cwd, user_dir=user_dir)
    arguments = {"store": store, "poll_interval": poll_interval, "poll_enabled": poll_enabled}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for row in SETTINGS:
        ctx = _Context(provider_name, demo, values)
        values[row.name], sources[row.name] = _resolve(row, ctx, arguments, arguments_from, env, doc)
    doc.check_keys(
        known=[key for row in SETTINGS for key in row.yaml],
        open_paths=[f"{row.yaml[0]}.{key}" for row in SETTINGS for key in row.free_form],
    )
    doc.report()
    return Settings(
        **values,
        config_path=doc.path,
        config_origin=doc.origin,
        sources=MappingProxyType(sources),
        ignored=MappingProxyType(dict(doc.ignored)),
    )
