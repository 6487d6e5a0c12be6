"""genzoo's own errors (ground floor): what a user can fix, each with a message that names
the key, file or server at fault. The command line turns these into one line on stderr and
exit code 2; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# a disk (or quota) that ran out
FULL = (errno.ENOSPC, errno.EDQUOT)


class GenzooError(Exception):
    """Bad input or environment a user can fix; the message names the key, file or server."""


class UsageError(GenzooError, ValueError):
    """Command-line options that do not fit together (a missing or contradictory option)."""


class DiskFull(GenzooError, OSError):
    """A write ran out of space; the message says what was being written and where."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror)


class Unreachable(GenzooError, ConnectionError):
    """A server genzoo needs (MLflow, Prefect) does not answer; the message names its URI."""


class TrackingUnavailable(Unreachable):
    """The MLflow tracking server does not answer; the message names its URI."""


class ModelNotFound(GenzooError, FileNotFoundError):
    """No model where one was named (a folder, or a registered MLflow version)."""


class ModelFileError(GenzooError, ValueError):
    """A model file that is not what genzoo writes (e.g. a pickle where safetensors belongs);
    it is refused, never executed."""


@contextlib.contextmanager
def writing(what: str, where: str | Path) -> Iterator[None]:
    """Turn a full disk during the block into :class:`DiskFull` naming ``what`` was being
    written and ``where`` (the cleanup of partial output is the block's own)."""
    try:
        yield
    except OSError as e:
        if e.errno not in FULL or isinstance(e, DiskFull):
            raise
        raise DiskFull(
            e.errno,
            f"{where}: no space left on the device while writing {what} ({e.strerror}); "
            "free some space and run again (the previous version is untouched)",
        ) from e


def check_output_dir(path: str | Path, key: str, into: bool = False) -> None:
    """Fail before any compute when ``path`` (the value of params key ``key``) cannot be a
    folder: something on the way to it exists and is not a folder, or it is not writable (with
    ``into``, a folder written into rather than replaced whole: the folder itself)."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise GenzooError(f"{key}={path}: exists and is not a folder")
    if into and path.is_dir():  # written into: the folder itself, whatever its parent allows
        if not os.access(path, os.W_OK | os.X_OK):
            raise GenzooError(f"{key}={path}: not writable")
        return
    for p in path.parents:  # the folder is replaced as a whole, from beside it
        if p.exists():
            if not p.is_dir():
                raise GenzooError(f"{key}={path}: {p} exists and is not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise GenzooError(f"{key}={path}: {p} is not writable")
            return


def check_output_files(targets: list[Path], ours: bool, what: str, key: str = "--out") -> None:
    """Refuse, before any work, to write ``targets`` (a command's output files) over anything
    but an earlier output of that command (``ours``: recognised from its content): a user's
    file of that name, a link or a folder stays as it is."""
    for target in targets:
        check_output_dir(Path(target).parent, key, into=True)
        if target.is_dir() and not target.is_symlink():
            raise GenzooError(f"{key} {target}: is a folder; choose another {key}")
        if target.is_symlink() or (target.exists() and not ours):
            raise GenzooError(f"{key} {target}: exists and is not {what}; choose another {key}, or remove it")


def describe_os_error(e: OSError) -> str | None:
    """One line for an OSError caused by the environment (a full disk, a path that cannot
    be a folder, no permission), naming the path; None for any other (a bug keeps its traceback)."""
    if isinstance(e, GenzooError):
        return str(e)
    user_fixable = (*FULL, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST,
                    errno.EISDIR, errno.ENAMETOOLONG, errno.ENOENT)  # fmt: skip
    if e.errno in FULL:  # a disk that filled outside a `writing` block: still no bug
        return f"{e.filename or 'a write'}: no space left on the device ({e.strerror})"
    if e.errno not in user_fixable or e.filename is None:
        return None
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{e.filename}: exists and is not a folder ({e.strerror})"
    if e.errno == errno.EISDIR:
        return f"{e.filename}: a folder, not a file ({e.strerror})"
    return f"{e.filename}: {e.strerror}"


def user_error(e: BaseException) -> str | None:
    """The one line to show for an error the user can fix: genzoo's own (bad params, bad data,
    a missing or refused model, a full disk, an unreachable tracking server), a file not
    found, an environment OSError naming its path, a ValueError raised by genzoo's own checks;
    None for anything else, which keeps its traceback."""
    if isinstance(e, GenzooError | FileNotFoundError):
        return _one_line(e)
    if isinstance(e, OSError):
        return describe_os_error(e)
    if type(e) is ValueError and _raised_by_genzoo(e):
        return _one_line(e)
    return None


def _one_line(e: BaseException) -> str:
    """The message: one line, or one line per bad key when several are (invalid params)."""
    return str(e).strip() or type(e).__name__


def _raised_by_genzoo(e: BaseException) -> bool:
    """A ValueError raised in genzoo's own code (a check of its input), not deep in a library."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    name = last.tb_frame.f_globals.get("__name__", "")
    return name.startswith("genzoo.")


def exit_code(main: Callable[[], object], name: str) -> int:
    """Run a command's ``main`` as its process: 0 on success; an error the user can fix is one
    line on stderr (``genzoo NAME: error: ...``) and exit code 2, as in the console script; a
    bug keeps its traceback; Ctrl-C is one line and exit code 130, as in the console script (under
    `dvc repro` it printed the traceback of wherever it landed). Every DVC stage runs through this
    (``python -m genzoo.tasks.X``)."""
    try:
        main()
    except KeyboardInterrupt:
        print(f"genzoo {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = user_error(e)
        if line is None:
            raise
        print(f"genzoo {name}: error: {line}", file=sys.stderr)
        return 2
    return 0
