"""``singleshot`` command line. Each module of this package adds its command group with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import traceback


def build_parser() -> argparse.ArgumentParser:
    from singleshot import __version__

    parser = argparse.ArgumentParser(prog="singleshot", description="Train, evaluate and deploy SSD object detectors.")
    parser.add_argument("--version", action="version", version=f"singleshot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: SINGLESHOT_DEBUG=1)")
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("SINGLESHOT_DEBUG", "") not in ("", "0")
    # Back large CPU tensors (input batches, IoU scratch) with transparent huge pages: fresh multi-megabyte buffers
    # otherwise pay a page fault per 4 KiB. The command line sets it before any command imports torch (which reads
    # it at its first large allocation); `import singleshot` changes nothing, and a user's own setting wins.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    command = getattr(args, "command", None) or "singleshot"
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"singleshot {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line for the user, the traceback only on request
        if debug:
            traceback.print_exc()
        print(f"singleshot {command}: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    return int(result or 0)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EPERM)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong, in words, for any exception (disk full and read-only recognized).

    Errors the package raises on purpose already name the file, record and field; OS errors get the file and
    what to do; anything else is an internal error and says how to see its traceback.
    """
    chain = _chain(exc)
    os_error = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
    where = _filename(os_error) if os_error is not None else ""
    full = any("No space left on device" in str(e) for e in chain)  # torch's zip writer says it in a RuntimeError
    if full or (os_error is not None and os_error.errno in _DISK_FULL):
        return (f"disk full (no space left on device){' writing ' + where if where else ''}; "
                "free some space or point the output elsewhere, then re-run the same command")
    text = " ".join(str(exc).split())
    if text and (type(exc).__module__.startswith("singleshot") or _raised_by_us(exc)):  # meant for the user
        return text
    if os_error is not None and os_error.errno == errno.EROFS:
        return (f"read-only file system: cannot write {where or 'the output'}; choose a folder you can write "
                "(run.dir=PATH for train, --out for eval, predict and export)")
    if os_error is not None and os_error.errno in _READ_ONLY:
        return (f"permission denied: {where or 'a file'}; check its permissions or use a folder you own "
                "(run.dir=PATH for train, --out for eval, predict and export)")
    if os_error is not None and os_error.strerror:
        return f"{os_error.strerror}{': ' + where if where else ''}"
    return (f"internal error {type(exc).__name__}: {text[:300]} (run with --debug or SINGLESHOT_DEBUG=1 for the "
            "traceback, and please report it)")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (explicit causes, and contexts not suppressed)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ if cur.__cause__ is not None else (None if cur.__suppress_context__ else cur.__context__)
    return seen


def _raised_by_us(exc: BaseException) -> bool:
    """A ValueError/RuntimeError raised by singleshot's own code (a checked condition with a message, not a bug)."""
    if not isinstance(exc, (ValueError, RuntimeError)) or exc.__traceback__ is None:
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def _filename(exc: OSError) -> str:
    return os.fspath(exc.filename) if exc.filename is not None else ""


if __name__ == "__main__":
    sys.exit(main())
