"""``weights list | download | verify | path``: the command-line face of :mod:`panst3r_engine.weights`.

Each command takes the argparse Namespace and returns an exit code: 0 ok,
1 a check failed or the weights are missing, 2 an error (printed as one line).
Results go to stdout (paths, tables) and messages to stderr, so
``$(python -m panst3r_engine weights path v2)`` works in scripts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

from panst3r_engine.config import ENV_BASE_URL, ENV_HOME, offline
from panst3r_engine.weights.download import download, verify
from panst3r_engine.weights.http import human_size
from panst3r_engine.weights.licence import is_accepted, licence_record, licence_text, require_licence
from panst3r_engine.weights.registry import (
    ALIASES,
    REGISTRY,
    WeightsError,
    get_entry,
    is_present,
    licence_of,
    list_weights,
    manual_instructions,
    weights_dir,
    weights_path,
)


class ProgressBar:
    """One self-overwriting stderr line (``\\r``) redrawn at most every ``interval`` s, so logs stay small."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        width: int = 24,
    ):
        self.stream = stream or sys.stderr
        self.interval, self.clock, self.width = interval, clock, width
        self._last_draw = float("-inf")
        self._start_time = self._start_bytes = None
        self._prev, self._total = -1, None
        self.draws = 0

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        if done < self._prev or total != self._total:  # a new file (folder downloads) or a restart
            self.finish()
            self._start_time, self._total = None, total
        if self._start_time is None:
            self._start_time, self._start_bytes = now, done
        self._prev = done
        if now - self._last_draw < self.interval and done != total:
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(done, total, now))
        self.stream.flush()
        self.draws += 1

    def line(self, done: int, total: int | None, now: float) -> str:
        """The bar text: bar and percentage when the size is known, bytes and rate always."""
        elapsed = max(now - self._start_time, 1e-9)
        rate = f"{human_size((done - self._start_bytes) / elapsed)}/s" if elapsed > 0.05 else ""
        if not total:
            return f"{human_size(done)}  {rate}".rstrip()
        filled = int(self.width * min(done / total, 1.0))
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {100 * done / total:5.1f}%  {human_size(done)} / {human_size(total)}  {rate}".rstrip()

    def finish(self) -> None:
        """End the bar's line so the next message starts on a fresh one."""
        if self.draws:
            self.stream.write("\n")
            self.stream.flush()
        self.draws = 0
        self._last_draw = float("-inf")


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registry as a table: id, file, present, size, path."""
    rows = list_weights()
    table = [("ID", "FILE", "PRESENT", "SIZE", "PATH")]
    for r in rows:
        hint = get_entry(r.id).size_hint
        size = human_size(r.size) if r.present else (f"~{human_size(hint)}" if hint else "-")
        table.append((r.id, r.file, "yes" if r.present else "no", size, str(r.path)))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    sys.stdout.flush()  # the table before the note, when both go to one terminal
    print(f"cache: {weights_dir()}  (set {ENV_HOME} to move it)", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """Download one item into the cache, showing the licence on first acceptance and a progress bar."""
    bar = ProgressBar()
    try:
        entry = get_entry(args.id)
        lic = licence_of(entry)
        if args.accept_license and lic.needs_acceptance and not is_accepted(lic.id):
            print(f"{licence_text(lic)}\nAccepted; this is recorded in {licence_record(lic.id)}.", file=sys.stderr)
        if not is_present(entry) and not offline():
            require_licence(entry, args.accept_license)
            print(f"downloading {entry.id} to {weights_path(entry)}", file=sys.stderr)
        path = download(
            entry, accept_license=args.accept_license, progress=bar, base_url=args.base_url, deadline_s=args.deadline
        )
    except WeightsError as exc:
        bar.finish()
        return _error(exc)
    except KeyboardInterrupt:
        bar.finish()
        print("cancelled; run the same command again to resume", file=sys.stderr)
        return 130
    bar.finish()
    print(path)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check one item (or every downloaded one) against the registry; exit 1 on any failure."""
    try:
        entries = [get_entry(args.id)] if args.id else [e for e in REGISTRY.values() if is_present(e)]
    except WeightsError as exc:
        return _error(exc)
    if not entries:
        print(f"no weights downloaded yet in {weights_dir()}", file=sys.stderr)
        return 0
    failed = False
    for entry in entries:
        ok, message = verify(entry)
        print(("ok      " if ok else "FAILED  ") + message)
        failed |= not ok
    return 1 if failed else 0


def cmd_path(args: argparse.Namespace) -> int:
    """Print where the item is (or would be); exit 1, with a hint on stderr, when it is not downloaded."""
    try:
        entry = get_entry(args.id)
    except WeightsError as exc:
        return _error(exc)
    print(weights_path(entry))
    if is_present(entry):
        return 0
    print(f"not downloaded yet: {manual_instructions(entry)}", file=sys.stderr)
    return 1


def add_weights_commands(weights_subparsers) -> None:
    """Register the commands on the ``weights`` sub-parsers object (``add_subparsers()`` result)."""
    ids = ", ".join([*REGISTRY, *ALIASES])
    p = weights_subparsers.add_parser("list", help="show the known weights and whether they are downloaded")
    p.set_defaults(func=cmd_list)
    p = weights_subparsers.add_parser("download", help="download weights into the cache (resumable, MD5-checked)")
    p.add_argument("id", help=f"weights id ({ids})")
    p.add_argument(
        "--accept-license",
        action="store_true",
        help="accept the weights' licence (shown once, then remembered in the cache)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help=f"mirror laid out like the cache's weights/ folder (default: ${ENV_BASE_URL} or official)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up a file's transfer after this long (default: its expected size at 100 kB/s plus 5 minutes)",
    )
    p.set_defaults(func=cmd_download)
    p = weights_subparsers.add_parser("verify", help="check downloaded weights (MD5) against the registry")
    p.add_argument("id", nargs="?", default=None, help="weights id (default: every downloaded one)")
    p.set_defaults(func=cmd_verify)
    p = weights_subparsers.add_parser("path", help="print where weights are (or will be) stored")
    p.add_argument("id", help=f"weights id ({ids})")
    p.set_defaults(func=cmd_path)
