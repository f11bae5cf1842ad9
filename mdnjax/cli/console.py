"""What the command line shows while it works: progress (a bar on a terminal, plain lines in a
log), warnings as one line each, and errors from a user's own code with the user's frames."""

from __future__ import annotations

import os
import sys
import traceback

import mdnjax


class Printer:
    """Progress on a terminal (tqdm on stderr) or plain loss lines (stdout), never both; in a log
    at most about ``LINES`` loss lines however long the run (the last epoch always), and one line
    as each stage before and after training starts (``stage``)."""

    LINES = 20

    def __init__(self, epochs: int, start: int):
        self.bar = None
        self.tty = sys.stderr.isatty()
        self.start = self.last = self.printed = start
        self.epochs = epochs

    @staticmethod
    def stage(text: str) -> None:
        """A stage that may take a while, as it starts."""
        print(f"mdnjax: {text} ...", flush=True)

    def __call__(self, p) -> None:
        if self.tty and self.bar is None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=self.epochs, initial=self.last, unit="epoch", file=sys.stderr, dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.tty = False
        if self.bar is not None:
            self.bar.update(p.epoch - self.last)
            val = "" if getattr(p, "validation", None) is None else f", validation {p.validation:.4f}"
            self.bar.set_postfix_str(f"loss {p.losses[-1]:.4f}{val}, {p.ms_per_epoch:.2f} ms/epoch")
        elif getattr(p, "validation", None) is not None:  # per-sample passes: every report (early stopping ends them)
            print(
                f"[pass {p.epoch:5d}/{p.epochs}] loss = {p.losses[-1]:.4f}  validation = {p.validation:.4f}  "
                f"({p.ms_per_epoch:.1f} ms/pass)",
                flush=True,
            )
            self.printed = p.epoch
        elif p.epoch - self.printed >= max(1, (p.epochs - self.start) // self.LINES) or p.epoch >= p.epochs:
            print(
                f"[epoch {p.epoch:6d}/{p.epochs}] loss = {p.losses[-1]:.4f}  ({p.ms_per_epoch:.2f} ms/epoch)",
                flush=True,
            )
            self.printed = p.epoch
        self.last = p.epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warning_printer(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)

    return show


def user_error(prog: str, err: BaseException) -> int:
    """Reports an exception from the user's code: their frames, then one line naming the function."""
    print(user_traceback(err), file=sys.stderr, end="")
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 1


def user_traceback(err: BaseException) -> str:
    """The frames of a user's function that raised (mdnjax's own frames left out)."""
    package = os.path.dirname(os.path.abspath(mdnjax.__file__))
    cause = err.__cause__ or err
    frames = [
        f for f in traceback.extract_tb(cause.__traceback__) if not os.path.abspath(f.filename).startswith(package)
    ]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(cause), cause)
    return "Traceback (your code, most recent call last):\n" + "".join(lines)
