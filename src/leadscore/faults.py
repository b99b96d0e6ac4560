"""What can go wrong with a batch job's files, said plainly: OS and Arrow errors (a full disk, a
file-size limit, a read-only folder, corrupt Parquet pages) become one `DataError` line naming the
file, and an output that would overwrite the job's own input is refused before anything is written.

Arrow reports a failed write as a bare `OSError` without the file's name ("Error writing bytes to
file. Detail: [errno 28] ..."), so the name comes from the caller, who knows which file it wrote.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from leadscore.errors import DataError, LeadscoreError

log = logging.getLogger(__name__)

PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit was reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (a failing disk or network share)",
    errno.ENAMETOOLONG: "file name too long",
}
_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def error_number(exc: BaseException) -> int | None:
    """The errno of an OS error, also when Arrow only wrote it into its message."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number:
        return number
    match = _ERRNO.search(str(exc))
    return int(match.group(1)) if match else None


def describe(exc: BaseException) -> str:
    """The problem in a few words, without a path (the caller names the file) or a value."""
    number = error_number(exc)
    if number is not None:
        return PROBLEMS.get(number) or os.strerror(number).lower()
    # Arrow's first line names the fault ("Corrupt snappy compressed data."); a cell's text
    # can follow "got '" in a conversion error, so it is cut there
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    return text.split(": got '")[0].rstrip(".") or type(exc).__name__


class Fault(DataError):
    """A file could not be read or written (the disk, the file system or the file's bytes
    failed, not a row of data). `resumable`: a write fault, after which the completed chunks
    are worth keeping for `--resume` once the cause (a full disk) is fixed; a corrupt input
    fails the same way again, so its job keeps nothing."""

    def __init__(self, message: str, *, resumable: bool) -> None:
        super().__init__(message)
        self.resumable = resumable


def fault(path: Path | str, doing: str, exc: BaseException, *, resumable: bool) -> Fault:
    """One line: the file, what was being done to it, and what went wrong."""
    return Fault(f"{path}: cannot {doing}: {describe(exc)}", resumable=resumable)


@contextmanager
def plainly(path: Path | str, doing: str, *, resumable: bool = True) -> Iterator[None]:
    """Turn an OS or Arrow error in the block into a `Fault` naming `path`; a
    `LeadscoreError` (already plain) passes through."""
    try:
        yield
    except LeadscoreError:
        raise
    except (OSError, pa.ArrowException) as exc:
        log.debug("%s: cannot %s", path, doing, exc_info=True)
        raise fault(path, doing, exc, resumable=resumable) from None


def remove_quietly(paths: Iterable[Path]) -> None:
    """Remove leftovers after a fault; a failure here must not hide the fault itself."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.debug("could not remove %s", path, exc_info=True)


# --------------------------------------------------------------------------- self-overwrite


def _same(a: Path, b: Path) -> bool:
    """The same file: the same resolved path, or (both existing) the same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def refuse_overwriting_input(
    input_path: Path, input_files: Iterable[str | Path], writes: Iterable[Path], parts: Path
) -> None:
    """Refuse a job whose output would destroy its input, before anything is written.

    `writes` are every file the job may create or replace (the output, its `.partial`, rejects,
    summary, lock), `parts` the folder it empties at the start. The input is lost if one of
    those is an input file, if an input file lives in `parts`, or if the output goes into the
    input's own folder of Parquet parts (the next read of that folder would take it in too).
    """
    files = [Path(f) for f in input_files]
    for target in writes:
        clash = next((f for f in files if _same(target, f)), None)
        if clash is not None:
            raise DataError(
                f"{target}: refusing to overwrite the input {clash}; choose another --output"
            )
        if input_path.is_dir() and _inside(target, input_path):
            raise DataError(
                f"{target}: refusing to write into the input folder {input_path}; choose an "
                "--output outside it"
            )
    inside = next((f for f in files if _inside(f, parts)), None)
    if inside is not None or _inside(input_path, parts):
        raise DataError(
            f"{inside or input_path}: the input is inside {parts}, which the job empties; "
            "move the input or choose another --output"
        )
