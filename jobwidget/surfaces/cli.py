"""`jobwidget` command line: `serve` (the HTTP API, SSE and webhook receiver), `sim` (the simulator) and
`settings` (every effective setting and where it came from).

    jobwidget serve                      # http://127.0.0.1:8001, provider from the environment
    jobwidget serve --provider sim --poll-interval 10
    jobwidget sim --port 8002 --rate-limit 600 --error-rate 0.05
    REPLICATE_API_TOKEN=any REPLICATE_BASE_URL=http://127.0.0.1:8002 jobwidget serve
    jobwidget settings                   # which config file was found, each value's source

Mistyped commands and flags get the usage line, a "did you mean" when one is close, and exit status 2.

Secrets come from the environment (REPLICATE_API_TOKEN, JOBWIDGET_API_TOKEN, JOBWIDGET_WEBHOOK_SECRET)
so they stay out of shell history and `ps`; `--api-token` exists for quick tests.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from jobwidget import __version__
from jobwidget.core.errors import ConfigError, JobwidgetError

if TYPE_CHECKING:
    from jobwidget.engine.config import Settings
    from jobwidget.engine.providers.base import Provider
    from jobwidget.surfaces.server import ServerOptions

__all__ = ["build_parser", "main"]

log = logging.getLogger("jobwidget")
_LEVELS = ("critical", "error", "warning", "info", "debug")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, got {value}")
    return value


def _seconds(text: str) -> float:
    from jobwidget.engine.config import parse_seconds

    try:
        return parse_seconds(text, "it")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None


class _Parser(argparse.ArgumentParser):
    """argparse, plus a "did you mean" for a mistyped command or flag."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{self._hint(message)}\n")

    def _hint(self, message: str) -> str:
        words: list[str] = []
        choices: list[str] = []
        if message.startswith("unrecognized arguments: "):
            words = [w.split("=", 1)[0] for w in message.split(": ", 1)[1].split() if w.startswith("-")]
            choices = [o for action in self._actions for o in action.option_strings]
        elif "invalid choice: " in message:
            words = [message.split("invalid choice: ", 1)[1].split("'")[1]]
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction):
                    choices = list(action.choices)
        for word in words:
            close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
            if close:
                return f" (did you mean {close[0]}?)"
        return ""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML config file (default: JOBWIDGET_CONFIG, else ./jobwidget.yaml, "
        "./simpletuner-enterprise.yaml, then the same names in the user config directory)",
    )
    parser.add_argument("--store", help="job store path (default: JOBWIDGET_STORE, config, data dir)")
    parser.add_argument(
        "--provider",
        choices=("sim", "replicate"),
        help="default: replicate when REPLICATE_API_TOKEN is set, else the simulated demo",
    )
    parser.add_argument(
        "--poll-interval",
        type=_seconds,
        metavar="SECONDS",
        help="seconds between refreshes of active jobs (default: JOBWIDGET_POLL_INTERVAL, config, 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobwidget", description="Watch cloud fine-tuning jobs (Replicate trainings).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{serve,sim,settings}", parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API, server-sent events and the webhook receiver",
        description="Serve the reference system's HTTP API (/api/cloud/jobs, /api/events, "
        "/api/webhooks/replicate, ...) over the job store. Binds 127.0.0.1 unless told otherwise; any "
        "other address needs an API token.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8001, help="port (default: 8001; 0 picks a free one)")
    _add_config_arguments(serve)
    serve.add_argument(
        "--api-token",
        default=None,
        help="bearer token every route but the webhook requires (default: env JOBWIDGET_API_TOKEN); "
        "mandatory when --host is not a loopback address",
    )
    serve.add_argument(
        "--poll",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="background polling (default: on, unless a webhook URL is configured)",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name to answer without a token (e.g. a LAN name); repeatable",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an origin (e.g. http://localhost:8888) whose pages may POST without a token; repeatable",
    )
    serve.add_argument("--sse-per-client", type=_positive_int, default=5, help="event streams per address")
    serve.add_argument("--sse-max-clients", type=_positive_int, default=100, help="event streams in total")
    serve.add_argument(
        "--header-timeout", type=_positive_float, default=10.0, help="seconds to send a request's headers"
    )
    serve.add_argument(
        "--body-timeout", type=_positive_float, default=60.0, help="seconds to send a request's body"
    )
    serve.add_argument(
        "--max-body", type=_positive_int, default=1024 * 1024, help="request body limit (bytes)"
    )
    serve.add_argument(
        "--webhook-max-body",
        type=_positive_int,
        default=32 * 1024 * 1024,
        help="webhook body limit in bytes (webhooks carry the whole training log)",
    )
    serve.add_argument("--log-level", default="info", choices=_LEVELS)

    sim = sub.add_parser(
        "sim",
        help="serve the simulated Replicate on loopback (benchmarks, browser tests)",
        description="A seeded fleet of trainings behind Replicate's HTTP API, with fault knobs. "
        "Point clients at it with REPLICATE_BASE_URL=http://127.0.0.1:PORT.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sim.add_argument("--port", type=_port, default=8002, help="port (default: 8002)")
    sim.add_argument("--seed", type=int, default=0, help="fleet seed (same seed, same fleet)")
    sim.add_argument("--fleet-size", type=int, default=150, help="trainings that exist at start")
    sim.add_argument("--active", type=int, default=None, help="of those, how many are running at start")
    sim.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    sim.add_argument("--rate-limit", type=int, default=None, help="requests per minute before 429 (0: none)")
    sim.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 5xx")
    sim.add_argument("--timeout-rate", type=float, default=0.0, help="fraction of requests that hang")
    sim.add_argument("--malformed-rate", type=float, default=0.0, help="fraction of 200 bodies corrupted")
    sim.add_argument("--time-scale", type=float, default=60.0, help="simulated seconds per wall second")
    sim.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="any other simulator knob (e.g. --set reset_rate=0.05); the value is read as JSON if it can be",
    )
    sim.add_argument("--log-level", default="info", choices=_LEVELS)

    settings = sub.add_parser(
        "settings",
        help="show every effective setting and where it came from",
        description="Resolve the settings as `serve` would (arguments, environment, config file, "
        "defaults) and print each value with its source, the config file chosen and any ignored keys.",
    )
    _add_config_arguments(settings)
    settings.add_argument("--log-level", default="warning", choices=_LEVELS)
    return parser


def _load(args: argparse.Namespace, poll: bool | None = None) -> Settings:
    from jobwidget.engine.config import load_settings
    from jobwidget.engine.runtime import wants_demo

    return load_settings(
        store=args.store,
        config=args.config,
        poll_interval=args.poll_interval,
        poll_enabled=poll,
        provider_name="replicate",
        demo=wants_demo(args.provider),
        arguments_from="command line",
        config_from="--config",
    )


def _serve(args: argparse.Namespace) -> int:
    from jobwidget.engine.runtime import make_provider
    from jobwidget.surfaces.server import ServerOptions, check_bind

    token = args.api_token or os.environ.get("JOBWIDGET_API_TOKEN") or None
    options = ServerOptions(
        api_token=token,
        max_body=args.max_body,
        webhook_max_body=args.webhook_max_body,
        sse_per_client=args.sse_per_client,
        sse_max_clients=args.sse_max_clients,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=tuple(args.allow_origin),
    )
    check_bind(args.host, token)
    settings = _load(args, poll=args.poll)  # refuses a bad provider spec before the store is opened
    provider = make_provider(args.provider, settings)
    # The store is opened on the loop that serves (a PostgreSQL pool belongs to its loop), and closed there.
    return asyncio.run(_serve_on_loop(args, settings, provider, options, token))


async def _serve_on_loop(
    args: argparse.Namespace,
    settings: Settings,
    provider: Provider,
    options: ServerOptions,
    token: str | None,
) -> int:
    from jobwidget.engine.runtime import Engine
    from jobwidget.engine.stores.urls import redact_url
    from jobwidget.surfaces.server import bind_socket, create_app, make_server

    engine = await Engine.open(settings, provider)
    try:
        poll = settings.poll_enabled
        app = create_app(engine, options, start_engine=True, poll=poll, bind_host=args.host)
        sock = bind_socket(args.host, args.port)
        host = f"[{args.host}]" if ":" in args.host else args.host
        log.info(
            "jobwidget serve: http://%s:%d  provider: %s  store: %s  auth: %s",
            host,
            sock.getsockname()[1],
            provider.label,
            redact_url(settings.store),
            "bearer token" if token else "none (loopback only)",
        )
        if poll:
            log.info(
                "jobwidget: job status polling every %g s (%s)",
                settings.poll_interval,
                settings.source("poll_interval"),
            )
        else:
            log.info("jobwidget: job status polling off (%s)", settings.source("poll_enabled"))
            if args.poll_interval is not None:
                log.warning("jobwidget: --poll-interval has no effect while polling is off; add --poll")
        await make_server(app, log_level=args.log_level).serve(sockets=[sock])
    finally:
        await engine.close_store()
    return 0


def _sim(args: argparse.Namespace) -> int:
    from jobwidget.sim import SimConfig, serve
    from jobwidget.surfaces.server import is_loopback

    knobs = {
        "seed": args.seed,
        "fleet_size": args.fleet_size,
        "latency": args.latency,
        "rate_limit": args.rate_limit or None,
        "error_rate": args.error_rate,
        "timeout_rate": args.timeout_rate,
        "malformed_rate": args.malformed_rate,
        "time_scale": args.time_scale,
    }
    if args.active is not None:
        knobs["active"] = args.active
    for item in args.set:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            print(f"jobwidget sim: --set wants KNOB=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            knobs[name.strip().replace("-", "_")] = json.loads(raw)
        except ValueError:
            knobs[name.strip().replace("-", "_")] = raw
    try:
        config = SimConfig().replace(**knobs)
    except (TypeError, ValueError) as exc:
        print(f"jobwidget sim: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(
            f"jobwidget sim: warning: binding {args.host}; the simulator accepts any token and is meant for "
            "loopback",
            file=sys.stderr,
        )
    log.info("jobwidget sim: simulated Replicate at http://%s:%d (REPLICATE_BASE_URL)", args.host, args.port)
    serve(host=args.host, port=args.port, config=config, log_level=args.log_level)
    return 0


def _settings(args: argparse.Namespace) -> int:
    print(repr(_load(args)))
    return 0


_COMMANDS = {"serve": _serve, "sim": _sim, "settings": _settings}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jobwidget` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so the usage line shown is the relevant one
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (sub.choices[args.command] if args.command else parser).error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)-9s %(message)s")
    for noisy in ("httpx", "httpcore"):  # a line per provider request is too much at INFO
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return _COMMANDS[args.command](args)
    except JobwidgetError as exc:  # configuration and store problems: one clear line, no traceback
        print(f"jobwidget {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
