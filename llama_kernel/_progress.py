"""A progress bar for long work (loading, quantizing): tqdm when installed,
otherwise a minimal one on stderr. It appears only once the work has taken
more than `delay` seconds, and never when disabled (verbose=False)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, desc: str, enabled: bool = True, delay: float = 1.0, unit: str = "weights"):
        self.desc, self.enabled, self.delay, self.unit = desc, enabled, delay, unit
        self.t0 = time.monotonic()
        self.bar = None
        self.last_draw = 0.0
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if not self.enabled:
            return
        now = time.monotonic()
        if self.bar is None:
            if now - self.t0 < self.delay:
                return
            self._start()
        self._draw(now)

    def _start(self):
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit=" " + self.unit, unit_scale=True, leave=False,
                            file=sys.stderr)
            self.bar.update(self.done)
            self._tqdm = True
        except Exception:
            self.bar = True
            self._tqdm = False

    def _draw(self, now, force=False):
        if self._tqdm:
            self.bar.total = self.total
            self.bar.update(self.done - self.bar.n)
            return
        if not force and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        frac = self.done / self.total if self.total else 1.0
        width = 30
        fill = int(frac * width)
        sys.stderr.write(f"\r{self.desc}: [{'#' * fill}{'.' * (width - fill)}] {100 * frac:5.1f}% "
                         f"({now - self.t0:.1f} s)")
        sys.stderr.flush()

    def close(self):
        if self.bar is None:
            return
        if self._tqdm:
            self.bar.close()
        else:
            self._draw(time.monotonic(), force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
        self.bar = None
