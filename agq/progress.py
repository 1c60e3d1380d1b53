"""Progress bars that only draw on a terminal: a piped or redirected log gets one line per bar.

tqdm redraws its bar many times a second; in a file every redraw is a new frame, so a log of ``make``
held thousands of frames per epoch. :func:`bar` returns a real tqdm bar when stderr (where bars go) is
a terminal, and otherwise a :class:`LogLine` with the same small interface (iterate, ``update``,
``set_postfix``, ``close``, context manager) that stays silent while it runs and writes one line, with
the count, the time and the last postfix, when it is closed, unless the caller writes its own line per
step (``log_line=False``: training's epoch rows, the build's step lines). ``enabled=False`` silences
both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LogLine:
    """A bar off a terminal: counts silently and writes ``desc: n/total unit in s (postfix)`` on close."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, enabled: bool,
                 stream: TextIO, log_line: bool = True) -> None:
        self.iterable, self.desc, self.unit, self.stream = iterable, desc, unit, stream
        self.enabled = enabled and log_line
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, 0, ""
        self.start = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.n += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        text = f"{self.desc}: {count} {self.unit} in {time.monotonic() - self.start:.1f} s"
        return f"{text} ({self.postfix})" if self.postfix else text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> LogLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
    enabled: bool = True, log_line: bool = True, stream: TextIO | None = None, **tqdm_options: Any,
) -> Any:
    """A tqdm bar on a terminal, else a :class:`LogLine` (one line on close when ``log_line``);
    ``tqdm_options`` (position, leave) go to tqdm."""
    stream = sys.stderr if stream is None else stream
    if enabled and on_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_options)
    return LogLine(iterable, total, desc, unit, enabled, stream, log_line)
