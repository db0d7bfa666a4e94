"""On-disk text corpora: where each dataset's split files live, and how they are read.

Every layout is plain text, one sentence (Yahoo: one document) per line, tokens separated by
whitespace; empty lines are skipped. The text is read as it is (already tokenised and, for PTB,
with rare words already ``<unk>``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from lebm.data.errors import DataError, missing_data_error, unreadable_file_error
from lebm.data.paths import expand_root

#: The split files of each file-based dataset, inside ``root``: (train, val, test). "lines" has none.
TEXT_LAYOUTS: dict[str, tuple[str, str, str] | None] = {
    "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "snli": ("snli.train.txt", "snli.valid.txt", "snli.test.txt"),
    "yahoo": ("yahoo.train.txt", "yahoo.valid.txt", "yahoo.test.txt"),
    "lines": None,
}

SPLITS = ("train", "val", "test")

_TITLES = {
    "ptb": "Penn Treebank (Mikolov's preprocessed word-level split)",
    "snli": "SNLI sentences (text-VAE layout, one sentence per line)",
    "yahoo": "Yahoo Answers (SA-VAE layout, one document per line)",
    "lines": "text files, one sentence per line",
}

_HOW_TO_GET = {
    "ptb": "lebm does not download PTB. Use the ptb.{train,valid,test}.txt files of Mikolov's "
    "'simple-examples' archive (data/ folder). Without the training file, train on the validation "
    "file: `train_file: ptb.valid.txt, val_file: ptb.test.txt`.",
    "snli": "lebm does not download SNLI. Write the premises/hypotheses you use one tokenised sentence per "
    "line into snli.{train,valid,test}.txt, or point train_file/val_file/test_file at your files.",
    "yahoo": "lebm does not download Yahoo Answers. Use the SA-VAE data (one tokenised document per line) "
    "named yahoo.{train,valid,test}.txt, or point train_file/val_file/test_file at your files.",
    "lines": "pass train_file, val_file and test_file: plain text files, one whitespace-tokenised sentence per "
    "line (relative to root when root is given).",
}


def text_split_paths(
    dataset: str, root: str | None, train_file: str | None, val_file: str | None, test_file: str | None
) -> dict[str, Path]:
    """``{"train", "val", "test"}`` -> file path: the layout's names (or the ``*_file`` overrides),
    inside ``root`` when given (``$VARS`` and ``~`` expanded in all of them).

    Raises:
        ValueError: no ``root`` for a layout dataset, or a "lines" dataset without all three files.
    """
    layout = TEXT_LAYOUTS[dataset]
    overrides = dict(zip(SPLITS, (train_file, val_file, test_file), strict=True))
    folder = expand_root(root)
    if layout is None:
        missing = [f"{split}_file" for split, name in overrides.items() if name is None]
        if missing:
            raise ValueError(
                f"dataset 'lines' reads the three files you name, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not given: set train_file, val_file and test_file under "
                "`data.init_args` (paths relative to root when root is given)"
            )
    elif folder is None:
        raise ValueError(
            f"dataset {dataset!r} reads {', '.join(layout)} from a folder but no root was given: pass "
            "`--data.init_args.root /path` on the command line or set `root:` under `data.init_args` in the "
            "config (environment variables such as $LEBM_DATA are expanded)"
        )
    names = {split: overrides[split] or (layout[i] if layout else None) for i, split in enumerate(SPLITS)}
    paths = {}
    for split, name in names.items():
        path = expand_root(name)
        assert path is not None
        paths[split] = folder / path if folder is not None else path
    return paths


def check_text_files(dataset: str, root: str | None, paths: dict[str, Path]) -> None:
    """Raise a ``FileNotFoundError`` naming every expected path when one of ``paths`` is not a file."""
    if all(path.is_file() for path in paths.values()):
        return
    folder = expand_root(root) if root is not None else Path.cwd()
    raise missing_data_error(
        _TITLES[dataset],
        folder,  # type: ignore[arg-type]
        [f"{path} ({split}){'' if path.is_file() else ' MISSING'}" for split, path in paths.items()],
        list(dict.fromkeys(path.name for path in paths.values())),
        _HOW_TO_GET[dataset],
    )


def read_sentences(path: Path, lowercase: bool = False) -> list[list[str]]:
    """The sentences of a text file: one per non-empty line, each a list of its whitespace-separated
    tokens (lower-cased when ``lowercase``)."""
    sentences = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                words = (line.lower() if lowercase else line).split()
                if words:
                    sentences.append(words)
    except UnicodeDecodeError as error:
        raise unreadable_file_error(path, error) from None
    return sentences


def count_sentences(path: Path, enough: int, max_length: int | None = None) -> int:
    """The sentences of a text file (non-empty lines; with ``max_length``, only those of at most
    that many words), counted up to ``enough``: the file is read only as far as it must be."""
    found = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                words = len(line.split())
                if words and (max_length is None or words <= max_length):
                    found += 1
                    if found >= enough:
                        break
    except UnicodeDecodeError as error:
        raise unreadable_file_error(path, error) from None
    return found


def check_sentence_counts(paths: dict[str, Path], batch_size: int, max_length_kept: int | None = None) -> None:
    """Raise a one-line :class:`~lebm.data.errors.DataError` when a split file holds no sentence (it
    is empty or all its lines are blank) or the training file has fewer sentences than one batch of
    ``batch_size`` (``max_length_kept``: only sentences of at most that many words count, those
    ``long_sentences: drop`` keeps). Reads each file only until it has seen enough, so a corpus of
    any size is checked in the time of its first lines."""
    for split, path in paths.items():
        if count_sentences(path, 1) == 0:
            raise DataError(
                f"the {split} file {path} holds no sentence (it is empty or every line is blank): point "
                f"data.init_args.{split}_file at a file with one whitespace-tokenised sentence per line"
            )
    train = paths["train"]
    found = count_sentences(train, batch_size, max_length_kept)
    if found < batch_size:
        if found == 0:
            raise DataError(
                f"long_sentences: drop with max_length={max_length_kept} drops every one of the sentences of the train "
                f"file {train}: raise data.init_args.max_length, or use long_sentences: truncate"
            )
        kept = f" of at most max_length={max_length_kept} words (long_sentences: drop)" if max_length_kept else ""
        raise DataError(
            f"the train file {train} holds {found} sentence{'s' if found != 1 else ''}{kept}, fewer than one training "
            f"batch of batch_size={batch_size}: lower data.init_args.batch_size to at most {found}, or use a larger "
            "file"
        )
