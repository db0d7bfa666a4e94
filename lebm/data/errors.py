"""The errors of data that cannot be used, each naming the file and the fix: :class:`DataError`
(the ``lebm`` command prints its message alone, without a traceback, whenever it is raised) and the
one helper that builds every "data files are missing" error, so all messages look alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DataError(ValueError):
    """Data that cannot be used: a file that is truncated, corrupt or not text, a folder without
    the files it should hold. The message names the file and the fix."""


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
