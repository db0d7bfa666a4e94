"""The errors of data that cannot be used, each naming the file and the fix: :class:`DataError`
(the ``lebm`` command prints its message alone, without a traceback, whenever it is raised) and the
one helper that builds every "data files are missing" error, so all messages look alike."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

#: How torch's DataLoader re-raises an error of one of its worker processes: the error's class is
#: called with this text followed by the worker's whole traceback (``torch._utils.ExceptionWrapper``).
_WORKER_PREFIX = re.compile(r"^Caught (\w+) in DataLoader (worker process \d+)\.\nOriginal Traceback", re.S)


class DataError(ValueError):
    """Data that cannot be used: a file that is truncated, corrupt or not text, a folder without
    the files it should hold. The message names the file and the fix.

    Raised in a DataLoader worker process, torch re-raises it in the main process with the
    worker's traceback as its message; the message is then put back to the original one (with
    the worker named), so that the ``lebm`` command still prints one line, not a traceback."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_message_from_worker(args[0], type(self)),)
        super().__init__(*args)


def _message_from_worker(text: str, kind: type[BaseException]) -> str:
    """``text`` itself, or, when it is a DataLoader worker's re-raised traceback of a ``kind`` error,
    that error's own message followed by ``(in DataLoader worker process N)``."""
    match = _WORKER_PREFIX.match(text)
    if match is None or match.group(1) != kind.__name__:
        return text
    marker = f"{kind.__module__}.{kind.__qualname__}: "
    start = text.rfind("\n" + marker)
    if start < 0:
        return text
    message = text[start + 1 + len(marker) :].rstrip("\n")
    return f"{message} (in DataLoader {match.group(2)})"


class MissingDataError(DataError, FileNotFoundError):
    """Data files that are not on disk (also a ``FileNotFoundError``)."""


def unreadable_file_error(path: Path | str, error: BaseException) -> DataError:
    """Build a :class:`DataError` for a file that exists but cannot be read as it should."""
    if isinstance(error, UnicodeDecodeError):
        return DataError(
            f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); convert it, e.g. "
            f"iconv -f latin1 -t utf-8 {path} > fixed.txt, and point the data at the converted file"
        )
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataError(
        f"{path} is truncated or corrupt ({reason}): an interrupted download or copy leaves such files; "
        "delete it and copy or download it again"
    )


#: How to switch on automatic download, spelled for YAML configs and for the CLI.
DOWNLOAD_HINT = (
    "or pass `download: true` (CLI: `--data.init_args.download true`; needs internet) to fetch them with torchvision"
)


def missing_data_error(
    dataset: str,
    root: Path | str,
    expected: Sequence[Path | str],
    required_names: Sequence[str],
    how_to_get: str,
) -> MissingDataError:
    """Build (not raise) a :class:`MissingDataError` (a ``FileNotFoundError``) for data that is not on disk.

    Args:
        dataset: human-readable dataset name, e.g. ``"MNIST (IDX files)"``.
        root: the folder the user pointed at.
        expected: every path that was looked at (all of them are listed in the message).
        required_names: the file or folder names that must exist.
        how_to_get: one or two sentences saying where to obtain the files.

    Returns:
        The error, ready to ``raise``.
    """
    root = Path(root)
    lines = [f"{dataset}: data files not found under root '{root}'."]
    if not root.exists():
        lines.append(f"The root folder '{root}' does not exist.")
    lines.append("Looked for:")
    lines.extend(f"  - {path}" for path in expected)
    lines.append("Required names: " + ", ".join(required_names) + ".")
    lines.append("How to get them: " + how_to_get)
    return MissingDataError("\n".join(lines))
