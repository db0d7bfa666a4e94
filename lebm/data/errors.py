"""One helper that builds every "data files are missing" error, so all messages look alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
) -> FileNotFoundError:
    """Build (not raise) a ``FileNotFoundError`` for data that is not on disk.

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
    return FileNotFoundError("\n".join(lines))
