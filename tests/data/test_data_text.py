"""Text data: the vocabulary, the template grammar, and TextDataModule on small files in the PTB
layout (bucketed, seeded, sharded and resumable training batches), plus the real offline PTB."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_resume import BatchRecorder as ImageBatchRecorder
from torch import Tensor

from lebm.data import TemplateGrammar, TextDataModule, Vocabulary
from lebm.data.errors import DataError
from lebm.data.text.batches import bucket_plan
from tests.helpers.trainers import quiet_trainer

PAD, BOS, EOS, UNK = 0, 1, 2, 3


# ----------------------------------------------------------------------------------- helpers
def corpus(n: int, seed: int, longest: int = 30) -> list[str]:
    """``n`` distinct sentences of 1..``longest`` words: a unique first word, then common words."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, size=n)
    return [" ".join([f"s{seed}n{i}"] + [f"w{j % 7}" for j in range(length - 1)]) for i, length in enumerate(lengths)]


def write_ptb(folder: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    """PTB-named files, Mikolov style (a leading space on every line), with an empty line inside."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("ptb.train.txt", train), ("ptb.valid.txt", val), ("ptb.test.txt", test)):
        text = "".join(f" {line} \n" for line in lines[:1]) + "\n" + "".join(f" {line} \n" for line in lines[1:])
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def ptb_root(tmp_path: Path) -> Path:
    return write_ptb(tmp_path / "ptb", corpus(600, seed=0), corpus(50, seed=1), corpus(70, seed=2))


def ptb_module(root: Path, **kwargs: object) -> TextDataModule:
    options: dict[str, object] = {"batch_size": 8, "bucket_batches": 10, "seed": 5}
    options.update(kwargs)
    module = TextDataModule("ptb", root=str(root), **options)  # type: ignore[arg-type]
    module.setup()
    return module


def epoch_batches(loader: torch.utils.data.DataLoader, epoch: int) -> list[Tensor]:
    """Every batch (B, T) of ``epoch``."""
    loader.sampler.set_epoch(epoch)
    return list(loader)


def padding_fraction(batches: list[Tensor]) -> float:
    return sum(int((x == PAD).sum()) for x in batches) / sum(x.numel() for x in batches)


def rows_as_text(module: TextDataModule, batches: list[Tensor]) -> list[str]:
    assert module.vocabulary is not None
    return [text for x in batches for text in module.vocabulary.to_text(x)]


# -------------------------------------------------------------------------------- vocabulary
def test_specials_have_fixed_ids_and_the_corpus_unk_is_the_unknown_token() -> None:
    vocabulary = Vocabulary.build([["<unk>", "a", "<unk>"], ["a", "<unk>", "b"]])
    assert vocabulary.tokens == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"]  # <unk> not counted as a word
    assert (vocabulary.pad_id, vocabulary.bos_id, vocabulary.eos_id, vocabulary.unk_id) == (PAD, BOS, EOS, UNK)
    assert [vocabulary.index(token) for token in Vocabulary.SPECIALS] == [0, 1, 2, 3]
    assert vocabulary.index("<unk>") == UNK and vocabulary.index("never-seen") == UNK


def test_build_orders_by_count_then_word_and_applies_max_size_and_min_freq() -> None:
    sentences = ["c b a", "b a", "a", "d d", "e"]  # counts: a 3, b 2, d 2, c 1, e 1
    assert Vocabulary.build(sentences).tokens[4:] == ["a", "b", "d", "c", "e"]
    assert Vocabulary.build(sentences, max_size=6).tokens[4:] == ["a", "b"]  # max_size counts the 4 specials
    assert Vocabulary.build(sentences, max_size=4).tokens == list(Vocabulary.SPECIALS)
    assert Vocabulary.build(sentences, min_freq=2).tokens[4:] == ["a", "b", "d"]
    assert Vocabulary.build(reversed(sentences)) == Vocabulary.build(sentences)  # deterministic


def test_bad_vocabularies_are_rejected() -> None:
    with pytest.raises(ValueError, match="first four tokens must be the specials"):
        Vocabulary(["<bos>", "<pad>", "<eos>", "<unk>", "a"])
    with pytest.raises(ValueError, match="repeat: \\['a'\\]"):
        Vocabulary([*Vocabulary.SPECIALS, "a", "b", "a"])
    with pytest.raises(ValueError, match="without whitespace"):
        Vocabulary([*Vocabulary.SPECIALS, "a b"])
    with pytest.raises(ValueError, match="max_size counts the 4 special tokens"):
        Vocabulary.build(["a"], max_size=3)
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build(["a"], min_freq=0)


def test_encode_decode_round_trip_and_unknown_words() -> None:
    vocabulary = Vocabulary.build(["the cat sat", "the dog"])
    ids = vocabulary.encode("the cat sat")
    assert ids == vocabulary.encode(["the", "cat", "sat"]) and len(ids) == 3 and UNK not in ids
    assert vocabulary.decode(ids) == ["the", "cat", "sat"]
    assert vocabulary.encode("the zebra") == [vocabulary.index("the"), UNK]
    dog = vocabulary.index("dog")
    assert vocabulary.decode([BOS, dog, PAD, dog, EOS, dog, dog]) == ["dog", "dog"]  # skips pad/bos, stops at eos
    with pytest.raises(ValueError, match="outside this vocabulary"):
        vocabulary.decode([len(vocabulary)])


def test_to_tensor_pads_and_truncates_and_to_text_inverts_it() -> None:
    vocabulary = Vocabulary.build(["a b c d e", "a b"])
    a, b, c = (vocabulary.index(word) for word in "abc")
    x = vocabulary.to_tensor(["a b c d e", ["b", "a"], "", "a zebra"])
    assert x.dtype == torch.long and x.shape == (4, 7)
    assert x[1].tolist() == [BOS, b, a, EOS, PAD, PAD, PAD]
    assert x[2].tolist() == [BOS, EOS, PAD, PAD, PAD, PAD, PAD]
    assert vocabulary.to_text(x) == ["a b c d e", "b a", "", "a <unk>"]
    short = vocabulary.to_tensor(["a b c d e", "a"], max_length=3)
    assert short.tolist() == [[BOS, a, b, c, EOS], [BOS, a, EOS, PAD, PAD]]  # eos kept after truncation
    with pytest.raises(ValueError, match="at least one sentence"):
        vocabulary.to_tensor([])
    with pytest.raises(ValueError, match="shape \\(B, T\\)"):
        vocabulary.to_text(x[0])


def test_state_dict_round_trip_gives_an_equal_vocabulary() -> None:
    vocabulary = Vocabulary.build(["x y z", "y z", "z"], max_size=6)
    restored = Vocabulary.from_state_dict(vocabulary.state_dict())
    assert restored == vocabulary and restored.tokens == ["<pad>", "<bos>", "<eos>", "<unk>", "z", "y"]
    assert restored != Vocabulary.build(["x y z"])
    with pytest.raises(ValueError, match="'tokens' list"):
        Vocabulary.from_state_dict({"words": []})


# ------------------------------------------------------------------------------- the grammar
def test_sampled_sentences_are_grammatical_and_come_from_their_template() -> None:
    grammar = TemplateGrammar()
    sentences, templates = grammar.sample_with_templates(500, torch.Generator().manual_seed(0))
    assert [grammar.template_of(sentence) for sentence in sentences] == templates.tolist()
    assert set(templates.tolist()) == {0, 1, 2, 3}
    assert {len(sentence.split()) for sentence in sentences} == {len(t) for t in grammar.templates}
    assert 15 <= len(grammar.words) <= 30 and {w for s in sentences for w in s.split()} == set(grammar.words)


def test_template_frequencies_match_the_weights() -> None:
    grammar = TemplateGrammar()
    n = 20000
    _, templates = grammar.sample_with_templates(n, torch.Generator().manual_seed(1))
    counts = torch.bincount(templates, minlength=4).double()
    expected = n * grammar.template_weights
    assert len(set(grammar.template_weights.tolist())) == 4  # non-uniform: the template is informative
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 16.27  # 3 degrees of freedom, p = 0.001


def test_scrambled_and_foreign_sentences_are_ungrammatical() -> None:
    grammar = TemplateGrammar()
    sentence = grammar.sample(1, torch.Generator().manual_seed(2))[0]
    words = sentence.split()
    assert grammar.is_grammatical(sentence)
    assert not grammar.is_grammatical(" ".join(reversed(words)))
    assert not grammar.is_grammatical("cat the sees")
    assert not grammar.is_grammatical("the sees cat")
    assert not grammar.is_grammatical("the cat barks")
    assert not grammar.is_grammatical("the cat sees the")
    assert grammar.template_of("the dog chases") == 0 and grammar.template_of("fox likes often") == 2


def test_templates_module_draws_grammatical_splits_from_disjoint_seeds() -> None:
    module = TextDataModule("templates", batch_size=16, n_train=300, n_val=40, n_test=50, seed=7)
    module.setup()
    grammar = module.grammar
    assert grammar is not None and module.train_sentences is not None and module.val_sentences is not None
    assert (len(module.train_sentences), len(module.val_sentences), len(module.test_sentences or [])) == (300, 40, 50)
    assert all(grammar.is_grammatical(s) for s in module.train_sentences + module.val_sentences)
    assert module.val_sentences != module.train_sentences[:40]
    assert module.val_sentences != (module.test_sentences or [])[:40]
    again = TextDataModule("templates", batch_size=16, n_train=300, n_val=40, n_test=50, seed=7)
    again.setup()
    other = TextDataModule("templates", batch_size=16, n_train=300, n_val=40, n_test=50, seed=8)
    other.setup()
    assert again.train_sentences == module.train_sentences and other.train_sentences != module.train_sentences
    assert module.vocab_size is not None and module.vocab_size == 4 + len(grammar.words)


# ----------------------------------------------------------------------------------- batches
def test_batches_are_bos_words_eos_then_padding(ptb_root: Path) -> None:
    module = ptb_module(ptb_root)
    assert module.vocabulary is not None and module.sample_shape is None and module.pad_id == PAD
    loaders = [module.train_dataloader(), module.val_dataloader(), module.test_dataloader()]
    for loader in loaders:
        for x in loader:
            assert isinstance(x, Tensor) and x.dtype == torch.long and x.ndim == 2
            assert bool((x[:, 0] == BOS).all())
            is_eos = x == EOS
            assert is_eos.sum(dim=1).tolist() == [1] * len(x)  # exactly one eos per row
            after_eos = is_eos.long().cumsum(dim=1).bool() & ~is_eos
            assert bool((x[after_eos] == PAD).all()) and bool((x[~after_eos] != PAD).all())
            assert int(is_eos.long().argmax(dim=1).max()) == x.shape[1] - 1  # T = longest + 2
            assert not bool((x[:, 1:][~after_eos[:, 1:] & ~is_eos[:, 1:]] == BOS).any())


def test_evaluation_batches_hold_every_sentence_sorted_by_length(ptb_root: Path) -> None:
    module = ptb_module(ptb_root, eval_batch_size=16)
    batches = list(module.test_dataloader())
    texts = rows_as_text(module, batches)
    assert module.test_sentences is not None and len(module.test_sentences) == 70  # the empty line is skipped
    lengths = [len(text.split()) for text in texts]
    assert lengths == sorted(lengths)
    vocabulary = module.vocabulary
    assert vocabulary is not None
    assert sorted(texts) == sorted(" ".join(vocabulary.decode(vocabulary.encode(s))) for s in module.test_sentences)
    assert all(x.shape[1] == max(len(t.split()) for t in vocabulary.to_text(x)) + 2 for x in batches)


def test_an_epoch_has_n_over_batch_size_full_batches_of_distinct_sentences(ptb_root: Path) -> None:
    module = ptb_module(ptb_root, batch_size=7)
    loader = module.train_dataloader()
    assert len(loader) == 600 // 7
    for epoch in (0, 3):
        batches = epoch_batches(loader, epoch)
        assert len(batches) == 600 // 7 and all(len(x) == 7 for x in batches)
        texts = rows_as_text(module, batches)
        assert len(set(texts)) == len(texts) == 7 * (600 // 7)


def test_bucketing_reduces_padding(ptb_root: Path) -> None:
    bucketed = padding_fraction(epoch_batches(ptb_module(ptb_root, bucket_batches=10).train_dataloader(), 0))
    unbucketed = padding_fraction(epoch_batches(ptb_module(ptb_root, bucket_batches=1).train_dataloader(), 0))
    assert unbucketed > 0.3  # lengths 1..30 at random: about 40% of a random batch is padding
    assert bucketed < 0.5 * unbucketed


def test_pools_are_sorted_and_every_plan_is_a_partition() -> None:
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 40, size=103)]
    plan = bucket_plan(lengths, batch_size=5, bucket_batches=4, seed=1, epoch=2)
    assert len(plan) == 103 // 5 and all(len(batch) == 5 for batch in plan)
    used = [index for batch in plan for index in batch]
    assert len(set(used)) == len(used)
    for pool in range(0, len(plan), 4):
        pool_lengths = [lengths[i] for batch in plan[pool : pool + 4] for i in batch]
        assert pool_lengths == sorted(pool_lengths)
    assert plan == bucket_plan(lengths, batch_size=5, bucket_batches=4, seed=1, epoch=2)
    assert plan != bucket_plan(lengths, batch_size=5, bucket_batches=4, seed=1, epoch=3)


def test_same_seed_and_epoch_give_the_same_batches_and_another_epoch_or_seed_does_not(ptb_root: Path) -> None:
    first = epoch_batches(ptb_module(ptb_root).train_dataloader(), epoch=2)
    torch.manual_seed(1234)  # the global RNG takes no part
    again = epoch_batches(ptb_module(ptb_root).train_dataloader(), epoch=2)
    assert len(first) == len(again) and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for other in (
        epoch_batches(ptb_module(ptb_root).train_dataloader(), epoch=3),
        epoch_batches(ptb_module(ptb_root, seed=6).train_dataloader(), epoch=2),
    ):
        assert len(other) == len(first)
        assert sum(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other, strict=True)) < 5


def test_without_a_seed_the_runs_seed_sets_the_order(ptb_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def first_epoch() -> list[str]:
        module = ptb_module(ptb_root, seed=None)
        return rows_as_text(module, epoch_batches(module.train_dataloader(), epoch=0))

    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    first = first_epoch()
    assert first_epoch() == first
    monkeypatch.setenv("PL_GLOBAL_SEED", "4")
    assert first_epoch() != first


def test_worker_processes_give_the_same_batches(ptb_root: Path) -> None:
    plain = epoch_batches(ptb_module(ptb_root).train_dataloader(), epoch=1)
    workers = epoch_batches(ptb_module(ptb_root, num_workers=2).train_dataloader(), epoch=1)
    assert len(plain) == len(workers) and all(torch.equal(a, b) for a, b in zip(plain, workers, strict=True))


def test_two_ranks_read_disjoint_halves_of_the_epoch(ptb_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = ptb_module(ptb_root)
    everything = set(rows_as_text(single, epoch_batches(single.train_dataloader(), epoch=1)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
        module = ptb_module(ptb_root)
        loader = module.train_dataloader()
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, rank)
        batches = epoch_batches(loader, epoch=1)
        assert len(batches) == len(loader) == (600 // 8) // 2
        shards.append(rows_as_text(module, batches))
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) <= everything
    assert len(set(shards[0]) | set(shards[1])) == 2 * ((600 // 8) // 2) * 8


def test_loaded_vocabulary_wins_after_setup_and_is_kept_before_it(ptb_root: Path) -> None:
    small = Vocabulary([*Vocabulary.SPECIALS, "w0", "w1"])
    module = ptb_module(ptb_root)
    assert module.vocab_size is not None and module.vocab_size > 600
    built = module.vocabulary
    module.load_state_dict({"vocabulary": small.state_dict()})
    assert module.vocabulary == small and module.vocab_size == 6
    x = torch.cat([batch.flatten() for batch in module.test_dataloader()])
    assert int(x.max()) == 5 and bool((x == UNK).any())  # encoded with the loaded vocabulary
    assert module.state_dict() == {"vocabulary": small.state_dict()}

    fresh = TextDataModule("ptb", root=str(ptb_root), batch_size=8)
    assert fresh.vocabulary is None and fresh.vocab_size is None and fresh.state_dict() == {}
    fresh.load_state_dict({"vocabulary": small.state_dict()})
    fresh.setup()
    assert fresh.vocabulary == small and built != small


def test_the_vocabulary_comes_from_the_training_split_only(ptb_root: Path) -> None:
    module = ptb_module(ptb_root, max_vocab_size=None)
    assert module.vocabulary is not None and module.vocab_size == 4 + 600 + 7  # unique first words + w0..w6
    assert module.vocabulary.index("s1n0") == UNK  # a validation-only word
    limited = ptb_module(ptb_root, max_vocab_size=11)
    assert limited.vocabulary is not None and limited.vocabulary.tokens[4:] == [f"w{j}" for j in range(7)]


def test_drop_leaves_long_training_sentences_out_and_truncate_cuts_them(ptb_root: Path) -> None:
    dropped = ptb_module(ptb_root, max_length=10, long_sentences="drop")
    truncated = ptb_module(ptb_root, max_length=10)
    full = ptb_module(ptb_root)
    assert full.train_sentences is not None and full.test_sentences is not None
    n_short = sum(len(s) <= 10 for s in full.train_sentences)
    assert dropped.train_sentences == [s for s in full.train_sentences if len(s) <= 10] and n_short < 600
    assert truncated.train_sentences == [s[:10] for s in full.train_sentences]
    for module in (dropped, truncated):  # evaluation splits are truncated, never dropped from
        assert module.test_sentences == [s[:10] for s in full.test_sentences]
        assert max(x.shape[1] for x in module.train_dataloader()) == 12
    with pytest.raises(ValueError, match="drops every one"):
        write_ptb(ptb_root.parent / "long", ["a b c"] * 10, ["a"], ["a"])
        ptb_module(ptb_root.parent / "long", max_length=2, long_sentences="drop")


def test_lowercase_validate_on_and_the_offline_ptb_file_choice(ptb_root: Path) -> None:
    shouting = write_ptb(ptb_root.parent / "loud", ["The Cat", "a DOG"] * 8, ["THE dog"], ["Cat"])
    module = ptb_module(shouting, lowercase=True)
    assert module.train_sentences is not None and module.train_sentences[:2] == [["the", "cat"], ["a", "dog"]]
    offline = ptb_module(ptb_root, train_file="ptb.valid.txt", val_file="ptb.test.txt", batch_size=5)
    assert offline.paths["train"].name == "ptb.valid.txt" and offline.paths["test"].name == "ptb.test.txt"
    assert offline.train_sentences is not None and len(offline.train_sentences) == 50
    assert offline.val_sentences == offline.test_sentences
    on_test = ptb_module(ptb_root, validate_on="test", eval_batch_size=100)
    assert torch.equal(next(iter(on_test.val_dataloader())), next(iter(on_test.test_dataloader())))


def test_lines_reads_the_three_files_it_is_given(tmp_path: Path) -> None:
    folder = write_ptb(tmp_path / "any", corpus(40, seed=3), corpus(5, seed=4), corpus(6, seed=5))
    module = TextDataModule(
        "lines",
        train_file=str(folder / "ptb.train.txt"),
        val_file=str(folder / "ptb.valid.txt"),
        test_file=str(folder / "ptb.test.txt"),
        batch_size=4,
    )
    module.setup()
    assert module.train_sentences is not None and len(module.train_sentences) == 40
    assert next(iter(module.train_dataloader())).shape[0] == 4


# ------------------------------------------------------------------------------------ errors
def test_bad_arguments_fail_at_construction_with_the_fix(tmp_path: Path, ptb_root: Path) -> None:
    with pytest.raises(ValueError, match="valid names are: ptb, snli, yahoo, lines, templates"):
        TextDataModule("wikitext")
    with pytest.raises(ValueError, match="no root was given"):
        TextDataModule("ptb")
    with pytest.raises(FileNotFoundError) as missing:
        TextDataModule("yahoo", root=str(tmp_path / "nowhere"))
    message = str(missing.value)
    assert str(tmp_path / "nowhere" / "yahoo.train.txt") in message and "yahoo.test.txt" in message
    assert "does not download" in message
    with pytest.raises(FileNotFoundError, match="ptb.train.txt"):
        TextDataModule("ptb", root=str(ptb_root), train_file="ptb.train.txt", val_file="nope.txt")
    with pytest.raises(ValueError, match="val_file, test_file are not given"):
        TextDataModule("lines", root=str(ptb_root), train_file="ptb.train.txt")
    with pytest.raises(ValueError, match="int >= 5"):
        TextDataModule("templates", max_vocab_size=4)
    with pytest.raises(ValueError, match="'truncate' or 'drop'"):
        TextDataModule("templates", long_sentences="cut")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'val' or 'test'"):
        TextDataModule("templates", validate_on="train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket_batches must be a positive integer"):
        TextDataModule("templates", bucket_batches=0)
    with pytest.raises(ValueError, match="reads no files"):
        TextDataModule("templates", train_file="ptb.train.txt")
    with pytest.raises(ValueError, match="cannot fill one training batch"):
        TextDataModule("templates", n_train=10, batch_size=32)


def test_empty_or_too_small_splits_fail_at_construction(tmp_path: Path) -> None:
    """A split file of blank lines, or a training file shorter than one batch, is refused when the
    data module is made (so before a run and its logger start), in one line naming the file and the
    fix; the files are read only as far as the check needs."""
    empty = write_ptb(tmp_path / "empty", [], ["a"], ["a"])
    with pytest.raises(DataError, match="the train file .*ptb.train.txt holds no sentence") as raised:
        TextDataModule("ptb", root=str(empty))
    assert "\n" not in str(raised.value)
    blank_test = write_ptb(tmp_path / "blank_test", ["a b"] * 4, ["a"], ["   ", ""])
    with pytest.raises(DataError, match="the test file .*ptb.test.txt holds no sentence"):
        TextDataModule("ptb", root=str(blank_test), batch_size=2)
    one = write_ptb(tmp_path / "one", ["the cat sees the dog"], ["a"], ["a"])
    with pytest.raises(DataError, match="holds 1 sentence, fewer than one training batch of batch_size=32: lower"):
        TextDataModule("ptb", root=str(one))
    few = write_ptb(tmp_path / "few", ["a b", "c"], ["a"], ["a"])
    with pytest.raises(DataError, match="holds 2 sentences, fewer than one training batch of batch_size=3"):
        TextDataModule("ptb", root=str(few), batch_size=3)
    with pytest.raises(DataError, match="holds 1 sentence of at most max_length=1 words"):
        TextDataModule("ptb", root=str(few), batch_size=2, max_length=1, long_sentences="drop")
    assert TextDataModule("ptb", root=str(few), batch_size=2, max_length=1).batch_size == 2  # truncated: both kept


def test_a_file_changed_after_construction_still_fails_in_setup_in_one_line(tmp_path: Path) -> None:
    folder = write_ptb(tmp_path / "later", ["a b", "c"], ["a"], ["a"])
    module = TextDataModule("ptb", root=str(folder), batch_size=2)
    (folder / "ptb.train.txt").write_text("a\n")
    with pytest.raises(DataError, match="exceeds the 1 training sentences"):
        module.setup()


# ---------------------------------------------------------------------------------- real PTB
def real_ptb_folder() -> Path:
    """``$LEBM_DATA/ptb`` with the offline validation and test files, or skip saying what is missing."""
    data = os.environ.get("LEBM_DATA")
    if not data:
        pytest.skip("LEBM_DATA is not set (point it at the folder that holds ptb/)")
    folder = Path(data).expanduser() / "ptb"
    for name in ("ptb.valid.txt", "ptb.test.txt"):
        if not (folder / name).is_file():
            pytest.skip(f"real data file {folder / name} is absent")
    return folder


@pytest.mark.slow
def test_real_ptb_offline_split() -> None:
    real_ptb_folder()
    module = TextDataModule(
        "ptb",
        root="$LEBM_DATA/ptb",
        train_file="ptb.valid.txt",
        val_file="ptb.test.txt",
        batch_size=64,
        eval_batch_size=500,
    )
    module.setup()
    vocabulary = module.vocabulary
    assert vocabulary is not None and vocabulary.index("<unk>") == UNK and vocabulary.tokens.count("<unk>") == 1
    assert module.vocab_size == 4 + 6020  # the 6021 distinct tokens of ptb.valid.txt, its <unk> among them
    assert (len(module.train_sentences or []), len(module.test_sentences or [])) == (3370, 3761)
    tokens_with_eos = sum(int(((x != PAD) & (x != BOS)).sum()) for x in module.test_dataloader())
    assert tokens_with_eos == 82430
    assert sum(len(s) + 1 for s in module.train_sentences or []) == 73760
    x = next(iter(module.train_dataloader()))
    assert x.shape[0] == 64 and bool((x == UNK).any())


# ------------------------------------------------------------------------------------ resume
class BatchRecorder(ImageBatchRecorder):
    """test_data_resume's recorder for batches that are one (B, T) tensor, not an (x, y) pair."""

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self.records.append((self.current_epoch, batch_idx, batch.detach().clone()))
        return self.weight * batch.float().mean()


def fit_templates(module: BatchRecorder, ckpt_path: Path | None = None, **data: object) -> list[str]:
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=5, limit_val_batches=0)
    datamodule = TextDataModule("templates", batch_size=16, n_train=160, bucket_batches=2, **data)  # type: ignore[arg-type]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return [str(warning.message) for warning in caught]


def test_fit_resumed_inside_an_epoch_trains_on_the_uninterrupted_batches_with_the_saved_vocabulary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    straight = BatchRecorder()
    fit_templates(straight)
    assert len(straight.records) == 10

    checkpoint = tmp_path / "interrupted.ckpt"
    fit_templates(BatchRecorder((1, 1), checkpoint))
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_done": 2}]
    assert len(saved["TextDataModule"]["vocabulary"]["tokens"]) > 10

    resumed = BatchRecorder()
    messages = fit_templates(resumed, ckpt_path=checkpoint, max_vocab_size=10)  # would build a smaller vocabulary
    expected = straight.records[7:]
    assert [(e, i) for e, i, _ in resumed.records] == [(e, i) for e, i, _ in expected]
    assert all(torch.equal(x, x_e) for (_, _, x), (_, _, x_e) in zip(resumed.records, expected, strict=True))
    assert not [message for message in messages if "not resumable" in message]
