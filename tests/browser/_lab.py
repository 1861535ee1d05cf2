"""Plumbing for the browser tests: a real JupyterLab on loopback and headless Debian Chromium (Playwright).

Why it is built this way:
- The server runs as a subprocess with a throwaway config (galata's test setup: no token, no XSRF, the
  app exposed as `window.jupyterapp`), throwaway settings (no news or update popups over screenshots),
  workspaces, runtime dir and job store, and a copy of the quickstart as its root: the repo's notebook
  never gets outputs saved, and the developer's own Jupyter and jobwidget state are never touched.
- Chromium is the system one (`/usr/bin/chromium`; Playwright's own browser downloads are not possible
  here). Without it the test fails under CI (a green run that drove no browser would lie) and skips
  locally.
- Chromium may only reach 127.0.0.1: every other host resolves to nothing, and background services that
  phone home are switched off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
SCREENSHOTS = Path(os.environ.get("JOBWIDGET_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
CHROMIUM = os.environ.get("JOBWIDGET_CHROMIUM", "/usr/bin/chromium")

SERVER_START_TIMEOUT_S = 180.0  # generous: a busy 2-core machine starts JupyterLab slowly

# Simulated Replicate for the kernel: at 60x, a new training about every third of a wall second (so a
# Sync a few seconds after the notebook's own always finds some: P(none in 3 s) ~ 1e-4), trainings lasting
# seconds to minutes (progress visibly moves, and some job is still running when the test cancels it).
# A session fleet (no epoch) with 8 jobs running at start: the test needs running cards to watch and
# cancel whatever the wall clock says; the continuous demo fleet is tested in tests/test_sim.py.
SIM_CONFIG = {
    "seed": 7,
    "fleet_size": 60,
    "active": 8,
    "time_scale": 60,
    "arrival_interval": 20,
    "epoch": None,
    "abort_fraction": 0.0,
}

CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Anything but loopback resolves to nothing: the test cannot reach the internet even by mistake.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _jupyter_config(root: Path, settings: Path, workspaces: Path, port: int) -> str:
    return "\n".join(
        [
            "from jupyterlab.galata import configure_jupyter_server",
            "c = get_config()  # noqa: F821",
            "configure_jupyter_server(c)",
            # After galata's helper: it sets port 8888 and its own temporary folders.
            f"c.ServerApp.port = {port}",
            "c.ServerApp.port_retries = 0",
            "c.ServerApp.ip = '127.0.0.1'",
            "c.ServerApp.allow_root = True",
            "c.ServerApp.open_browser = False",
            "c.ServerApp.terminals_enabled = False",
            f"c.ServerApp.root_dir = {str(root)!r}",
            f"c.LabApp.user_settings_dir = {str(settings)!r}",
            f"c.LabApp.workspaces_dir = {str(workspaces)!r}",
            "c.LabApp.news_url = None",
            "c.LabApp.check_for_updates_class = 'jupyterlab.handlers.announcements.NeverCheckForUpdate'",
            "",
        ]
    )


def _user_settings(settings: Path) -> None:
    """No news/update popup, no extension manager (it would query a package index)."""
    files: dict[str, dict[str, Any]] = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
    }
    for rel, data in files.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


@dataclass
class LabServer:
    """A running JupyterLab: where it listens, what it serves, and where its job store and log are."""

    base_url: str
    root_dir: Path
    store: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(repr=False)

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def _wait_ready(server: LabServer, deadline: float) -> None:
    url = f"{server.base_url}api/status"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.process.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"JupyterLab did not answer {url} within {SERVER_START_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT twice is Jupyter's clean shutdown (kernels included); then SIGTERM, then SIGKILL the group."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 0.3), (signal.SIGINT, 5.0), (signal.SIGTERM, 3.0)):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            break
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    # Kernels run in the server's process group: take any left behind with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def find_chromium() -> tuple[str | None, str]:
    """(path, "") when the system Chromium and Playwright are usable, else (None, why not)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return None, (
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(./dev setup does), or point JOBWIDGET_CHROMIUM at a Chromium binary"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the playwright Python package is not installed: pip install -e '.[test]'"
    return CHROMIUM, ""


@contextmanager
def start_lab() -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 (a free port) serving a temp copy of the quickstart; stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="jobwidget-lab-"))
    root, settings, workspaces = tmp / "root", tmp / "settings", tmp / "workspaces"
    for d in (root, settings, workspaces, tmp / "runtime", tmp / "ipython", tmp / "tmp", tmp / "mpl"):
        d.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    _user_settings(settings)
    port = _free_port()
    config = tmp / "jupyter_test_config.py"
    config.write_text(_jupyter_config(root, settings, workspaces, port))
    store = tmp / "jobs.sqlite3"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBWIDGET_", "REPLICATE_", "JUPYTER_", "JPY_")) and k != "JUPYTERLAB_DIR"
    }
    env.update(
        {
            "JOBWIDGET_STORE": str(store),
            "JOBWIDGET_SIM": json.dumps(SIM_CONFIG),
            "JOBWIDGET_POLL_INTERVAL": "2",
            "JOBWIDGET_PROGRESS_INTERVAL": "1",
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
            "JUPYTERLAB_GALATA_ROOT_DIR": str(root),
            "IPYTHONDIR": str(tmp / "ipython"),
            "MPLCONFIGDIR": str(tmp / "mpl"),
            "TMPDIR": str(tmp / "tmp"),  # galata's helper makes temp folders of its own: keep them in ours
            "XDG_DATA_HOME": str(tmp / "xdg-data"),
            "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log_path = tmp / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--config={config}", "--no-browser"],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it takes the kernels with it
        )
    server = LabServer(f"http://127.0.0.1:{port}/", root, store, log_path, process, env)
    try:
        _wait_ready(server, time.monotonic() + SERVER_START_TIMEOUT_S)
        yield server
    finally:
        _stop(process)
        if os.environ.get("JOBWIDGET_KEEP_LAB_TMP"):
            print(f"\nJupyterLab temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class PageWatch:
    """What the page did that a test must not allow: dialogs (an `alert` from injected HTML), requests
    off loopback, uncaught errors; console errors are kept for the failure report."""

    dialogs: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def open_page(chromium: str, base_url: str) -> Iterator[tuple[Any, PageWatch]]:
    """A fresh headless Chromium page (1400x1000) with dialogs, off-site requests and errors recorded."""
    from playwright.sync_api import sync_playwright

    watch = PageWatch()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
            page = context.new_page()
            page.set_default_timeout(15_000)

            def on_dialog(dialog: Any) -> None:
                watch.dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            def on_request(request: Any) -> None:
                if not request.url.startswith((base_url, "data:", "blob:", "about:")):
                    watch.offsite.append(request.url)

            def on_console(message: Any) -> None:
                if message.type == "error":
                    watch.console_errors.append(message.text)

            page.on("dialog", on_dialog)
            page.on("request", on_request)
            page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
            page.on("console", on_console)
            yield page, watch
        finally:
            browser.close()


# Runs code in the open notebook's kernel as the frontend would (not in a cell): the reply's status and
# any error. The test uses it to act on the kernel's own objects (`jobs`, the in-process simulator).
_JS_RUN_IN_KERNEL = """async (code) => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session.kernel;
  const errors = [];
  const future = kernel.requestExecute({ code, silent: false, store_history: false });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === "error") errors.push(`${msg.content.ename}: ${msg.content.evalue}`);
  };
  const reply = await future.done;
  return { status: reply.content.status, errors };
}"""


def run_in_kernel(page: Any, code: str) -> None:
    """Execute `code` in the notebook's kernel; raise if it did not run cleanly."""
    result = page.evaluate(_JS_RUN_IN_KERNEL, code)
    if result["status"] != "ok" or result["errors"]:
        raise AssertionError(f"kernel code failed ({result['status']}): {result['errors']}\n{code}")
