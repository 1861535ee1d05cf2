"""`urlsplit` without the standard library's cache of its last 128 answers (Python 3.11 has one).

Every job carries its own link, so splitting each job's URL only churned that cache, and the answers
it held lived long enough to be promoted to the garbage collector's oldest generation: a full sync of
10,000 jobs promoted about a thousand of them, bringing the next full collection (tens of milliseconds
with every thread stopped) sooner. Splitting a URL again costs a few microseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

__all__ = ["split_url"]

split_url: Callable[[str], SplitResult] = getattr(urlsplit, "__wrapped__", urlsplit)
