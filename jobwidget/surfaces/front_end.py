"""The panel's front-end files, and the one ES module anywidget ships to the browser.

The front-end has two sources: `protocol.js` (the panel's protocol as types, and its pure logic, which
vitest tests without a DOM) and `widget.js` (the view). anywidget inlines a single module and the browser
cannot resolve a relative import from it, so the shipped module is `protocol.js` followed by `widget.js`
without its `import`/`export ... from "./protocol.js"` statements: one scope, in which the protocol's
names are what the view imported. No bundler: two files joined in a fixed order, checked at import time.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

__all__ = ["front_end_module", "static_path"]

# `import { a, b } from "./protocol.js";` and `export { a } from "./protocol.js";`, on one line or several.
_FROM_PROTOCOL = re.compile(r'^(?:import|export)\s*\{[^}]*\}\s*from\s*"\./protocol\.js";[ \t]*\n?', re.M)


def static_path(name: str) -> Path:
    """Where the shipped front-end file `name` lives.

    A wheel carries it in `jobwidget/static/` (copied there from `js/src/` at build time); a development
    checkout (editable install) reads `js/src/` directly, so there is no stale copy to keep in step.
    """
    package_dir = Path(__file__).resolve().parent.parent
    candidates = (package_dir / "static" / name, package_dir.parent / "js" / "src" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"jobwidget front-end file {name!r} not found (looked in {', '.join(map(str, candidates))}); "
        "reinstall jobwidget or restore js/src/"
    )


@cache
def front_end_module() -> str:
    """The panel's ES module as anywidget ships it: protocol.js, then widget.js without its imports of it."""
    protocol = static_path("protocol.js").read_text(encoding="utf-8")
    view = static_path("widget.js").read_text(encoding="utf-8")
    if re.search(r"^(?:import|export)\b[^;]*\bfrom\b", protocol, re.M):
        raise RuntimeError("js/src/protocol.js must not import anything: it is shipped as it is")
    joined, found = _FROM_PROTOCOL.subn("", view)
    if not found or re.search(r"^import\b", joined, re.M):
        raise RuntimeError('js/src/widget.js may import only from "./protocol.js", as `import { ... } from`')
    return f"{protocol}\n// ---- js/src/widget.js\n{joined}"
