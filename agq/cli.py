"""The one command line, ``agq``. Each subcommand lives in its stage's own small ``cli`` module.

Stage modules are imported only when their subcommand runs, so that ``agq train`` never pays for
importing FINN. Any :class:`AgqError` becomes one line on stderr and the error's exit code; a reader that
goes away (``agq ... | head``) ends the command quietly with 141, as SIGPIPE ends other writers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import sys

from agq import __version__
from agq.errors import AgqError

# subcommand -> module with ``register(subparsers)``; its parser sets ``func(args) -> int``.
COMMANDS = {
    "train": "agq.training.cli",
    "export": "agq.export.cli",
    "build": "agq.hw.cli",
    "deps": "agq.hw.deps_cli",
    "rtlsim": "agq.hw.rtlsim.cli",
    "bench": "agq.bench.cli",
}


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"agq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    for name in COMMANDS:
        if name in wanted:
            importlib.import_module(COMMANDS[name]).register(sub)
        else:
            sub.add_parser(name, help=f"(see agq {name} --help)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler) raised where the process is, as Ctrl-C is: ``finally`` blocks
    and context managers then stop child processes, drop temp files and release locks, which the default
    SIGTERM (the process just ends) skips."""


def _terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (`agq ... | head`): the kernel flags its write end
    with POLLERR. Only then is a BrokenPipeError the reader's doing rather than the command's."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no file behind stdout (an in-process caller's capture)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit as a traceback
        return code
    except BrokenPipeError:
        if not _reader_gone():  # a pipe of the command's own (a child's stdin): a real failure
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit's own flush finds no pipe
        return 128 + signal.SIGPIPE
    except AgqError as exc:
        print(f"agq {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"agq {args.command}: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"agq {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
