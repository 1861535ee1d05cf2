"""The YAML configuration file: which one is read, its contents, and the keys in it nobody reads.

Discovery, first found wins: `Jobs(config=...)` / `--config`, then `JOBWIDGET_CONFIG`, then
`jobwidget.yaml` and `simpletuner-enterprise.yaml` in the working directory, then the same two names in
the user config directory (platformdirs). The reference system's users keep their
`simpletuner-enterprise.yaml` beside their work, so it is looked for there without being asked.

What was chosen, and every key that will not be used, is logged once per process: re-running the cell
that creates `Jobs` does not repeat it, and nothing in the file is dropped without a word.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from jobwidget.core.errors import ConfigError

__all__ = ["CONFIG_NAMES", "ConfigDocument", "find_config", "user_config_dir"]

log = logging.getLogger("jobwidget.config")

CONFIG_NAMES = ("jobwidget.yaml", "simpletuner-enterprise.yaml")
CONFIG_ENV = "JOBWIDGET_CONFIG"

# Keys of the reference system's configuration that mean nothing here: said so, with the reason.
NOT_USED = {
    "background.queue_processing": "SimpleTuner's job queue setting; jobwidget has no queue to process",
}

_reported: set[str] = set()
_reported_lock = threading.Lock()


def _log_once(key: str, level: int, message: str, *args: object) -> None:
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    log.log(level, message, *args)


def user_config_dir() -> Path:
    return Path(platformdirs.user_config_dir("jobwidget", appauthor=False))


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ConfigDocument:
    """One configuration's contents, where they came from, and the keys that were not used."""

    data: Mapping[str, Any]
    label: str  # "config /path/jobwidget.yaml" or "Jobs(config={...})": how errors name the source
    path: Path | None = None
    origin: str = "none"  # how it was found: argument, JOBWIDGET_CONFIG, working directory, ...
    passed_over: tuple[Path, ...] = ()  # other candidate files present but not read
    ignored: dict[str, str] = field(default_factory=dict)  # dotted path -> why

    def get(self, dotted: str) -> Any:
        """The value at `a.b.c`, or None; a non-mapping on the way is an error naming both keys."""
        node: Any = self.data
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if node is None:
                return None
            if not isinstance(node, Mapping):
                where = ".".join(parts[:i])
                raise ConfigError(
                    f"{dotted} ({self.label}): {where} must be a mapping of settings, got {_short(node)}"
                )
            node = node.get(part)
        return node

    def check_keys(self, known: Iterable[str], open_paths: Iterable[str]) -> None:
        """Record every key that is neither a known setting nor inside a free-form one, with a hint."""
        tree: dict[str, Any] = {}
        for dotted in (*known, *open_paths):
            node = tree
            parts = dotted.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):  # a leaf that has known keys below it
                    node[part] = {}
                node = node[part]
            node.setdefault(parts[-1], None)
        every = sorted({*known, *open_paths})
        self._walk(self.data, tree, "", every)

    def _walk(self, data: Mapping[Any, Any], tree: Mapping[str, Any], prefix: str, every: list[str]) -> None:
        for raw_key, value in data.items():
            key = str(raw_key)
            dotted = f"{prefix}{key}"
            if key in tree:
                below = tree[key]
                if isinstance(below, Mapping) and isinstance(value, Mapping):
                    self._walk(value, below, f"{dotted}.", every)
                continue
            if dotted in NOT_USED:
                self.ignored.setdefault(dotted, NOT_USED[dotted])
                continue
            reason = "not a jobwidget setting"
            hint = _did_you_mean(key, prefix, tree, every)
            self.ignored.setdefault(dotted, f"{reason}; did you mean {hint}?" if hint else reason)

    def report(self) -> None:
        """Log the choice of file and the ignored keys, each once per process."""
        if self.origin == "none":
            _log_once(
                f"none:{self.label}",
                logging.INFO,
                "jobwidget: no configuration file (%s); using arguments, the environment and defaults",
                self.label,
            )
        elif self.path is not None:
            extra = ""
            if self.passed_over:
                extra = "; also present but not read (first found wins): " + ", ".join(
                    str(p) for p in self.passed_over
                )
            _log_once(
                f"choice:{self.path}",
                logging.INFO,
                "jobwidget: configuration from %s (%s)%s",
                self.path,
                self.origin,
                extra,
            )
        for dotted, why in self.ignored.items():
            _log_once(
                f"ignored:{self.label}:{dotted}",
                logging.WARNING,
                "jobwidget: %s: %s ignored (%s)",
                self.label,
                dotted,
                why,
            )


def _did_you_mean(key: str, prefix: str, tree: Mapping[str, Any], every: list[str]) -> str | None:
    """A known key beside this one that it looks like a typo of, else a known key elsewhere it names."""
    norm = key.lower().replace("-", "_")
    siblings = list(tree)
    close = difflib.get_close_matches(norm, siblings, n=1, cutoff=0.75)
    if close:
        return prefix + close[0]
    leaves = {dotted.rsplit(".", 1)[-1]: dotted for dotted in every}
    close = difflib.get_close_matches(norm, list(leaves), n=1, cutoff=0.85)
    return leaves[close[0]] if close else None


def _read_yaml(path: Path, origin: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (from {origin})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
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


def find_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    env: Mapping[str, str],
    *,
    config_from: str = "Jobs(config=...)",
    cwd: Path | None = None,
    user_dir: Path | None = None,
) -> ConfigDocument:
    """The configuration to read, by the discovery order in the module docstring, already parsed."""
    if isinstance(config, Mapping):
        return ConfigDocument(dict(config), "Jobs(config={...})", origin="Jobs(config={...})")
    if config is not None and str(config).strip():
        path = Path(config).expanduser()
        return ConfigDocument(_read_yaml(path, config_from), f"config {path}", path, config_from)
    raw = env.get(CONFIG_ENV, "").strip()
    if raw:
        path = Path(raw).expanduser()
        return ConfigDocument(_read_yaml(path, CONFIG_ENV), f"config {path}", path, CONFIG_ENV)
    places = (
        (Path.cwd() if cwd is None else cwd, "found in the working directory"),
        (user_config_dir() if user_dir is None else user_dir, "found in the user config directory"),
    )
    found = [(d / name, why) for d, why in places for name in CONFIG_NAMES if (d / name).is_file()]
    if not found:
        looked = " and ".join(str(d) for d, _ in places)
        return ConfigDocument({}, f"looked for {' and '.join(CONFIG_NAMES)} in {looked}")
    path, why = found[0]
    path = path.absolute()
    passed = tuple(p.absolute() for p, _ in found[1:])
    return ConfigDocument(_read_yaml(path, why), f"config {path}", path, why, passed)
