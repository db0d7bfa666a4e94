"""The paper recipes: composed from shared fragments, and holding the papers' settings.

``test_*_recipe_values`` resolve each paper recipe exactly as ``lebm fit -c <recipe>`` does and
compare its key settings with the papers and the authors' official code (the numbers below are
theirs, each block names its source): chain steps and sizes, learning rates, betas, batch, epochs,
latent size, sigma, a whole training split, FID against the whole training set, the final epoch
scored. An edit that drifts a value fails here. Each paper recipe's comments cite its paper by
arXiv id, and no recipe cites a file the repository does not have.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lebm.cli.recipes import RecipeError, compose_recipe, expand_includes, included_files, read_recipe
from tests.helpers.cli_runner import run_cli
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
FRAGMENT_DIRS = ("data", "evaluation", "speed")


def runnable_recipes() -> list[str]:
    """Every recipe a user runs: not base*.yaml, not data/, evaluation/ or speed/ fragments, not _*.yaml."""
    found = []
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        relative = path.relative_to(REPO / "recipes")
        if relative.name.startswith(("base", "_")) or relative.parts[0] in FRAGMENT_DIRS:
            continue
        found.append(str(path.relative_to(REPO)))
    return found


def data_kind(recipe: str) -> tuple[Any, ...]:
    """What a recipe gives its data: the DataModule class, its dataset (or in-distribution dataset),
    the names of the ``init_args`` it sets, and the data fragments it includes. A recipe that does
    not compose (a broken include, no data class) is a kind of its own, so that its own test fails,
    not the collection of every test."""
    try:
        data = compose_recipe(REPO / recipe)["data"]
        given = dict(data.get("init_args") or {})
        fragments = tuple(sorted(path.name for path in included_files(REPO / recipe) if path.parent.name == "data"))
        return data["class_path"], given.get("dataset"), given.get("in_dataset"), tuple(sorted(given)), fragments
    except (RecipeError, KeyError, TypeError, AttributeError):
        return ("does not compose", recipe)


def one_per_data_kind(recipes: list[str]) -> list[Any]:
    """``recipes`` as pytest parameters (a name, or a ``pytest.param`` marked ``slow``): the first
    recipe of each :func:`data_kind` in the default tier, the others (the same data section under
    another method's nets) in the slow tier, which CI also runs (issue 109's test budget)."""
    seen: set[tuple[Any, ...]] = set()
    chosen: list[Any] = []
    for recipe in recipes:
        kind = data_kind(recipe)
        chosen.append(recipe if kind not in seen else pytest.param(recipe, marks=pytest.mark.slow, id=recipe))
        seen.add(kind)
    return chosen


def resolve(recipe: str, *overrides: str, capsys: pytest.CaptureFixture) -> dict[str, Any]:
    """The config ``lebm fit -c recipe [overrides]`` runs with, interpolations resolved."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        run_cli("fit", "-c", recipe, *overrides, "--print_config")
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def get(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for key in dotted.split("."):
        value = value[key]
    return value


def callback_args(config: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c.get("init_args") or {} for c in config["trainer"]["callbacks"] if c["class_path"].endswith(f".{name}")]


M = "model.init_args."
PRIOR, DECODER = M + "prior.init_args.", M + "decoder.init_args."
# LEBM: the official train_svhn.py of Pang et al., NeurIPS 2020 (github.com/bpucla/latent-space-EBM-prior)
LEBM_SVHN = {
    PRIOR + "sampler.init_args.n_steps": 60,
    PRIOR + "sampler.init_args.step_size": 0.4,
    M + "posterior_sampler.init_args.n_steps": 20,
    M + "posterior_sampler.init_args.step_size": 0.1,
    M + "decoder_lr": 1e-4,
    M + "prior_lr": 2e-5,
    M + "betas": [0.5, 0.999],
    M + "lr_decay": 0.998,
    PRIOR + "latent_dim": 100,
    PRIOR + "sigma": 1.0,
    PRIOR + "init_std": 1.0,
    PRIOR + "energy_net.init_args.hidden": 200,
    PRIOR + "energy_net.init_args.depth": 2,
    PRIOR + "energy_net.init_args.activation": "gelu",
    PRIOR + "energy_net.init_args.in_dim": 100,
    DECODER + "sigma": 0.3,
    DECODER + "net.init_args.latent_dim": 100,
    "data.init_args.batch_size": 100,
    "trainer.max_epochs": 201,
    "seed_everything": 1,
}
LEBM_CELEBA128 = {
    **LEBM_SVHN,
    PRIOR + "sampler.init_args.n_steps": 80,
    M + "posterior_sampler.init_args.n_steps": 40,
    PRIOR + "energy_net.init_args.hidden": 1000,
    "trainer.max_epochs": 400,
    "data.init_args.limit": 30000,
    "data.init_args.resize_shorter_side": 128,
    "data.init_args.center_crop": 128,
    "data.init_args.image_size": 128,
}
# Multi-stage NCE: Xiao & Han (NeurIPS 2022) publish no settings; LEBM's are the provisional defaults
NCE_SVHN = {
    key.replace("prior_lr", "ratio_lr").replace("energy_net", "ratio_net"): value for key, value in LEBM_SVHN.items()
} | {PRIOR + "n_stages": 4}


def with_latent(settings: dict[str, Any], size: int) -> dict[str, Any]:
    """``settings`` with the latent size changed everywhere it is read."""
    return {key: (size if key.endswith(("latent_dim", ".in_dim")) else value) for key, value in settings.items()}


PAPER_RECIPES = {
    "recipes/latent_ebm/svhn.yaml": LEBM_SVHN,
    "recipes/latent_ebm/cifar10.yaml": {**with_latent(LEBM_SVHN, 128), DECODER + "net.init_args.ngf": 128},
    "recipes/latent_ebm/celeba64.yaml": {**LEBM_SVHN, "data.init_args.limit": 40000, "data.init_args.image_size": 64},
    "recipes/latent_ebm/celeba128.yaml": LEBM_CELEBA128,
    "recipes/multistage_nce/svhn.yaml": NCE_SVHN,
    "recipes/multistage_nce/cifar10.yaml": {**with_latent(NCE_SVHN, 128), DECODER + "net.init_args.ngf": 128},
    "recipes/multistage_nce/celeba64.yaml": {**NCE_SVHN, "data.init_args.limit": 40000},
}
FID_SAMPLES = {"recipes/latent_ebm/celeba128.yaml": 30000}  # the official n_fid_samples; 50,000 elsewhere


@pytest.mark.parametrize("recipe", sorted(PAPER_RECIPES))
def test_image_recipe_values_follow_the_papers(recipe: str, capsys: pytest.CaptureFixture) -> None:
    config = resolve(recipe, capsys=capsys)
    for key, expected in PAPER_RECIPES[recipe].items():
        assert get(config, key) == pytest.approx(expected), f"{recipe}: {key}"
    # the whole training split trains; validation reads the test split
    assert get(config, "data.init_args.val_size") == 0 and get(config, "data.init_args.validate_on") == "test"
    # FID: the whole training set as reference, the papers' sample count, the final model scored
    (fid,) = callback_args(config, "FID")
    assert fid["reference"] == "train" and fid["num_reference"] is None
    assert fid["num_samples"] == FID_SAMPLES.get(recipe, 50000)
    max_epochs = get(config, "trainer.max_epochs")
    assert fid["score_final"] or (max_epochs - fid["first_epoch"]) % fid["every_n_epochs"] == 0
    if recipe not in FID_SAMPLES:  # the official schedule: after epochs 51, 101, 151, 201
        assert (fid["first_epoch"], fid["every_n_epochs"]) == (51, 50)
    assert callback_args(config, "ReconstructionMSE"), "the papers report test MSE"


# Dual-MCMC: the official config.py / nets.py of Cui & Han, NeurIPS 2023 (github.com/jcui1224/dual-MCMC)
DUAL_CIFAR10 = {
    M + "data_sampler.init_args.n_steps": 30,
    M + "data_sampler.init_args.step_size": 0.5,
    M + "data_sampler.init_args.noise_std": 1e-3,
    M + "posterior_sampler.init_args.n_steps": 10,
    M + "posterior_sampler.init_args.step_size": 0.1,
    M + "test_data_sampler.init_args.n_steps": 70,
    M + "test_data_sampler.init_args.step_size": 0.4,
    M + "test_data_sampler.init_args.noise_std": 1e-3,
    M + "ebm_negatives": "revised_again",
    M + "temperature": "auto",
    M + "data_weight": 1.0,
    M + "sample_weight": 50.0,
    M + "inference_sample_weight": 0.1,
    M + "energy_lr": 1e-4,
    M + "decoder_lr": 3e-4,
    M + "encoder_lr": 1e-4,
    M + "betas": [0.0, 0.9],
    M + "energy_weight_decay": 0.0,
    M + "decoder_weight_decay": 5e-4,
    M + "encoder_weight_decay": 5e-4,
    M + "lr_decay": 0.998,
    M + "divergence_limits": {"train/ebm_contrast": 1e4},
    M + "encoder.init_args.latent_dim": 128,
    M + "encoder.init_args.nif": 128,
    M + "encoder.init_args.stem": True,
    DECODER + "net.init_args.latent_dim": 128,
    DECODER + "net.init_args.widths": [512, 512, 512, 512],
    DECODER + "sigma": pytest.approx(0.3 / 2**0.5),
    M + "energy_net.init_args.widths": [512, 512, 512, 512],
    M + "energy_net.init_args.downsample": [True, True, False, False],
    "data.init_args.batch_size": 100,
    "trainer.max_epochs": 301,
    "seed_everything": 1234,
}
DUAL_CELEBA64 = {
    **DUAL_CIFAR10,
    M + "data_sampler.init_args.step_size": 0.3,
    M + "sample_weight": 70.0,
    M + "encoder.init_args.stem": False,
    DECODER + "net.init_args.widths": [1024, 512, 256, 128, 64],
    M + "energy_net.init_args.widths": [64, 128, 256, 512, 1024],
    M + "energy_net.init_args.downsample": [True] * 5,
    "data.init_args.limit": 162770,
    "data.init_args.crop_box": [15, 40, 163, 188],
    "data.init_args.image_size": 64,
    "data.init_args.random_flip": True,
}


@pytest.mark.parametrize("recipe,settings", [("cifar10", DUAL_CIFAR10), ("celeba64", DUAL_CELEBA64)])
def test_dual_mcmc_recipe_values_follow_the_official_code(recipe: str, settings: dict, capsys) -> None:
    config = resolve(f"recipes/dual_mcmc/{recipe}.yaml", capsys=capsys)
    for key, expected in settings.items():
        assert get(config, key) == expected, f"{recipe}: {key}"
    assert get(config, "data.init_args.val_size") == 0 and get(config, "data.init_args.validate_on") == "test"
    # two FIDs of 50,000 samples against the whole training split: EBM-revised and raw generator samples
    fids = {fid["name"]: fid for fid in callback_args(config, "FID")}
    assert set(fids) == {"fid_revised", "fid_generator"}
    assert fids["fid_generator"]["generate_kwargs"] == {"revise": False}
    assert not fids["fid_revised"].get("generate_kwargs")
    for fid in fids.values():
        assert fid["num_samples"] == 50000 and fid["reference"] == "train" and fid["num_reference"] is None
        assert fid["score_final"]
    # test MSE of "Inf + L=10" (mse) and "Inf" (mse_inf)
    outputs = {args.get("output", "mse") for args in callback_args(config, "ReconstructionMSE")}
    assert outputs == {"mse", "mse_inf"}


@pytest.mark.parametrize("method", ["latent_ebm", "multistage_nce"])
def test_mnist_anomaly_recipe_values_follow_the_protocol(method: str, capsys: pytest.CaptureFixture) -> None:
    config = resolve(f"recipes/{method}/mnist_anomaly.yaml", capsys=capsys)
    assert get(config, "data.init_args.pool") == "full" and get(config, "data.init_args.train_fraction") == 0.8
    ((anomaly),) = callback_args(config, "AnomalyDetection")
    assert anomaly["last_k"] == 10  # AUPRC averaged over the last 10 epochs
    assert get(config, PRIOR + "sampler.init_args.n_steps") == 60
    assert get(config, M + "posterior_sampler.init_args.n_steps") == 20
    assert (
        get(config, DECODER + "net.init_args.image_size") == 28 and get(config, DECODER + "net.init_args.channels") == 1
    )


#: The row of docs/results/published that each method folder's MNIST anomaly recipes draw (None: no row).
PUBLISHED_ANOMALY_ROWS = {
    "latent_ebm": "LEBM",
    "hierarchical": "ICCV joint EBM",
    "damc": "DAMC",
    "multistage_nce": None,
}


def published_auprc(method: str) -> dict[int, float]:
    """``{held-out digit: AUPRC}`` of ``method``'s MNIST anomaly row in docs/results/published."""
    rows = [row for path in (REPO / "docs/results/published").glob("*.json") for row in json.loads(path.read_text())]
    return {
        row["digit"]: row["value"]
        for row in rows
        if row["method"] == method and row["experiment"] == "mnist_anomaly" and row["metric"] == "auprc"
    }


@pytest.mark.parametrize("folder", sorted(PUBLISHED_ANOMALY_ROWS))
def test_the_mnist_anomaly_recipes_draw_the_published_auprc_of_their_held_out_digit(folder: str) -> None:
    """Both MNIST anomaly recipes of a method give, for each held-out digit, the AUPRC of its row in
    docs/results/published as the line of curves.png (DAMC's said to be unverified), its legend naming
    how the paper selected it on its test split; multi-stage NCE has no row there, and no line."""
    from lebm.cli.loggers import resolve_paper_targets

    row = PUBLISHED_ANOMALY_ROWS[folder]
    published = published_auprc(row) if row else {}
    assert sorted(published) == ([1, 4, 5, 7, 9] if row else [])
    for name in ("mnist_anomaly", "mnist_anomaly_offline"):
        path = REPO / "recipes" / folder / f"{name}.yaml"
        # a top-level value of plain numbers: the recipe's layers merged as the parser merges them
        # (tests/cli/test_recipe_catalog.py compares that merge with the parser's own)
        targets = compose_recipe(path).get("paper_targets")
        if row is None:
            assert targets is None, path.name
            continue
        assert {digit: resolve_paper_targets(targets, [digit]) for digit in published} == {
            digit: {"val/auprc": value} for digit, value in published.items()
        }
        lines = path.read_text().splitlines()
        comment = lines[next(i for i, line in enumerate(lines) if line.startswith("paper_targets:")) - 1]
        assert ("UNVERIFIED" in comment) == (folder == "damc"), comment
        from lebm.cli.loggers import paper_target_labels

        label = paper_target_labels(targets).get("val/auprc", "")  # the curves' legend names how it was read
        assert label.startswith("paper, ") and ("test" in label), (path.name, label)


def test_an_override_reaches_every_component_that_uses_the_value(capsys: pytest.CaptureFixture) -> None:
    config = resolve(
        "recipes/latent_ebm/svhn.yaml",
        "--model.init_args.prior.init_args.latent_dim",
        "64",
        "--data.init_args.image_size",
        "64",
        capsys=capsys,
    )
    assert get(config, PRIOR + "latent_dim") == 64
    assert get(config, PRIOR + "energy_net.init_args.in_dim") == 64
    assert get(config, DECODER + "net.init_args.latent_dim") == 64
    assert get(config, DECODER + "net.init_args.image_size") == 64


# Every runnable recipe parses and builds its data on fake files: tests/test_recipes_build.py.


# ------------------------------------------------------------------------------ citations
# The paper each method folder's recipes follow, by arXiv id: Pang et al. (NeurIPS 2020), Xiao & Han
# (NeurIPS 2022), Cui & Han (NeurIPS 2023), Cui, Wu & Han (ICCV 2023).
ARXIV = {
    "latent_ebm": "2006.08205",
    "multistage_nce": "2209.08739",
    "dual_mcmc": "2312.02469",
    "hierarchical": "2310.09604",
}
TARGET = "# Paper target:"


def leading_comment(path: Path) -> list[str]:
    """The comment lines a recipe starts with: what ``lebm recipes`` reads and a reader sees first."""
    return list(itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines()))


def paper_recipes() -> list[Path]:
    """The runnable recipes that aim at a published number, and each method's ``_method.yaml``."""
    found = []
    for folder in ARXIV:
        for path in sorted((REPO / "recipes" / folder).glob("*.yaml")):
            targets = [line for line in leading_comment(path) if line.startswith(TARGET)]
            if path.name == "_method.yaml" or (targets and not targets[0].startswith(f"{TARGET} none")):
                found.append(path)
    return found


def test_paper_recipes_cite_their_paper_by_arxiv_id() -> None:
    """A recipe's comments cite the paper (authors, venue, arXiv id) and the authors' code, never a
    note the reader does not have: the leading comment of each paper recipe names its arXiv id."""
    recipes = paper_recipes()
    assert len(recipes) >= 20, [path.name for path in recipes]
    for path in recipes:
        folder = path.parent.name
        assert ARXIV[folder] in "\n".join(leading_comment(path)), f"{path.relative_to(REPO)}: no arXiv {ARXIV[folder]}"


def test_no_recipe_comment_cites_a_file_the_repository_lacks() -> None:
    """Every comment of every recipe (``lebm recipes`` prints them): the docs site's check."""
    pytest.importorskip("griffe")  # the docs hook reads docstrings with it (the docs extra)
    hook = load_script("docs/hooks/cited_files.py")
    assert hook.recipe_problems(REPO / "recipes", REPO) == []


def test_recipes_state_each_shared_block_once() -> None:
    """No runnable recipe repeats the run block (logger, checkpoints, grids): base.yaml holds it."""
    for recipe in runnable_recipes():
        text = (REPO / recipe).read_text()
        assert "ModelCheckpoint" not in text and "WandbLogger" not in text, recipe
        assert "include:" in text, recipe


# ----------------------------------------------------------------------------- the mechanism
def test_includes_expand_depth_first_once_each_before_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "frag").mkdir()
    (tmp_path / "base.yaml").write_text("trainer: {max_epochs: 1}\n")
    (tmp_path / "frag" / "a.yaml").write_text("include: [../base.yaml]\n")
    (tmp_path / "frag" / "b.yaml").write_text("include: [../base.yaml, a.yaml]\n")
    (tmp_path / "recipe.yaml").write_text("include: [frag/b.yaml]\n")
    names = [p.relative_to(tmp_path).as_posix() for p in included_files(tmp_path / "recipe.yaml")]
    assert names == ["base.yaml", "frag/a.yaml", "frag/b.yaml"]
    args = expand_includes(["fit", "-c", str(tmp_path / "recipe.yaml"), "--trainer.max_epochs", "3"])
    assert args[1:5] == ["--config", str(tmp_path / "base.yaml"), "--config", "{}"]  # a.yaml has nothing else
    assert args[-2:] == ["--trainer.max_epochs", "3"] and args.count("--config") == 4


def test_callbacks_without_plus_over_included_ones_are_named_in_one_line(tmp_path: Path, capsys) -> None:
    """``callbacks:`` replaces the list the files before it give (lebm's checkpoint, picture and
    curve callbacks in a real recipe): said in one line; ``callbacks+:`` adds, silently."""
    base = "trainer: {callbacks: [{class_path: lebm.callbacks.SampleGrid}, {class_path: my.Curves}]}\n"
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "replaces.yaml").write_text("include: [base.yaml]\ntrainer: {callbacks: [{class_path: my.Mine}]}\n")
    (tmp_path / "adds.yaml").write_text("include: [base.yaml]\ntrainer: {callbacks+: [{class_path: my.Mine}]}\n")
    expand_includes(["fit", "-c", str(tmp_path / "adds.yaml")])
    assert capsys.readouterr().err == ""
    expand_includes(["fit", "-c", str(tmp_path / "replaces.yaml")])
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "SampleGrid, Curves" in said and "callbacks+:" in said, said


def test_no_recipe_lebm_ships_says_its_callbacks_are_replaced(capsys) -> None:
    """lebm's own bases replace callbacks on purpose (``base_text.yaml``): only a file the command
    is given is checked, so no shipped recipe prints the line."""
    for recipe in runnable_recipes():
        expand_includes(["fit", "-c", str(REPO / recipe)])
    assert "replaces the" not in capsys.readouterr().err


def test_bad_includes_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("include: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("include: [a.yaml]\n")
    with pytest.raises(RecipeError, match="cycle"):
        included_files(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("include: [missing.yaml]\n")
    with pytest.raises(RecipeError, match=r"includes 'missing.yaml', but .* does not exist"):
        included_files(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("trainer:\n#  max_epochs: 5\n", r"line 2: `trainer:` is empty \(null.*would wipe the trainer settings"),
        (
            "model:\n  init_args:\n    prior:\n      class_path: lebm.models.TiltedGaussianPrior\n      init_args:\n",
            r"line 6: `model.init_args.prior.init_args:` is empty \(null\) where a mapping of settings belongs: the "
            "recipe may be cut short there",
        ),
        ("model:\n  init_args: 3\n", r"line 3: `model.init_args` holds the text '3' where a mapping of settings"),
        ("data:\n", r"line 2: `data:` is empty \(null.*would wipe the data settings"),
        (
            "trainer:\n  callbacks:\n    - class_path: lebm.callbacks.FID\n      init_args:\n",
            r"line 5: `trainer.callbacks\[0\].init_args:` is empty \(null\) where a mapping of settings belongs",
        ),
    ],
    ids=["empty-trainer", "cut-after-a-key", "text-for-a-mapping", "empty-data", "cut-inside-a-list"],
)
def test_a_recipe_is_checked_whole_before_the_parser(body: str, message: str, tmp_path: Path, capsys) -> None:
    """CPU. A recipe that includes the quickstart and leaves ``trainer:`` with its lines commented out
    (YAML's null, which would wipe the included trainer and train with none of lebm's callbacks), one
    cut short after ``init_args:``, and one with a text for ``init_args``: each is refused in one line
    naming the file, the key and its line, before the parser builds anything."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"include: [{REPO / 'recipes' / 'quickstart.yaml'}]\n{body}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("fit", "-c", str(recipe), "--trainer.default_root_dir", str(tmp_path / "run"))
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert said.startswith(f"lebm: error: {recipe}, line ") and re.search(message, said), said
    assert not (tmp_path / "run").exists()


def test_a_fragment_given_alone_names_the_recipe_to_give_before_it(capsys) -> None:
    """CPU. DAMC's re-scoring fragment given alone: one line saying it changes a recipe given before
    it, with one that names it (not "not an option of lebm.models.Method")."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli("test", "-c", "damc/_eval_anomaly_det")
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1 and "not an option" not in said, said
    assert "_eval_anomaly_det.yaml is a fragment (its name starts with _)" in said
    assert "-c damc/mnist_anomaly -c " in said


def test_an_include_of_two_methods_recipes_is_refused_as_two_config_flags_are(tmp_path: Path, capsys) -> None:
    """CPU. ``include: [latent_ebm/svhn, damc/svhn]`` composed DAMC with LatentEBM's chains in silence:
    it is refused in one line naming both and the fix, as ``-c`` twice is; two recipes of one method
    (its class path written in full) still compose."""
    recipes = REPO / "recipes"
    two = tmp_path / "two.yaml"
    two.write_text(f"include: [{recipes / 'latent_ebm/svhn.yaml'}, {recipes / 'damc/svhn.yaml'}]\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli("fit", "-c", str(two))
    assert stopped.value.code == 2
    (line,) = [text for text in capsys.readouterr().err.splitlines() if "lebm.models.DAMC" in text]
    assert "latent_ebm/svhn.yaml', a recipe of lebm.models.LatentEBM, and" in line
    assert "damc/svhn.yaml', one of lebm.models.DAMC: one run trains one method; include one of them" in line
    (tmp_path / "longer_path.yaml").write_text("model: {class_path: lebm.models.latent_ebm.LatentEBM}\n")
    one = tmp_path / "one.yaml"
    one.write_text(f"include: [{recipes / 'latent_ebm/svhn.yaml'}, longer_path.yaml]\n")
    assert included_files(one)[-1] == tmp_path / "longer_path.yaml"


# Joint hierarchical EBM: the official train_fid.py / train_hs.py of Cui, Wu & Han, ICCV 2023
# (github.com/jcui1224/hierarchical-representation-ebm)
ENC = M + "encoder.init_args."
HIER_SVHN = {
    PRIOR + "latent_dim": 50,
    PRIOR + "groups": [10] * 5,
    PRIOR + "sigma": 1.0,
    PRIOR + "sampler.init_args.n_steps": 100,
    PRIOR + "sampler.init_args.step_size": 0.3,
    PRIOR + "energy_net.init_args.in_dim": 50,
    PRIOR + "energy_net.init_args.hidden": 100,
    PRIOR + "energy_net.init_args.depth": 2,
    PRIOR + "energy_net.init_args.activation": "leaky_relu",
    PRIOR + "energy_net.init_args.spectral_norm": True,
    DECODER + "sigma": pytest.approx(0.05**0.5),  # Gfactor 10 = 1 / (2 sigma^2)
    DECODER + "net.init_args.group_sizes": [10] * 5,
    DECODER + "net.init_args.widths": [1024, 512, 256, 256, 128],
    DECODER + "net.init_args.top_hidden": [2048, 2048],
    DECODER + "net.init_args.injection": "concat",
    ENC + "group_sizes": [10] * 5,
    ENC + "widths": [128, 256, 256, 512],
    ENC + "top_hidden": [1024, 1024],
    ENC + "separate_branches": True,
    M + "update_order": "generator_first",
    M + "decoder_lr": 3e-4,
    M + "prior_lr": 2e-6,
    M + "betas": [0.0, 0.9],
    M + "decoder_weight_decay": 5e-4,
    M + "prior_weight_decay": 0.0,
    M + "lr_decay": 0.998,
    "data.init_args.batch_size": 100,
    "data.init_args.train_split": "extra",
    "trainer.max_epochs": 200,
    "seed_everything": 1234,
}
HIER_SVHN_HS = {
    **HIER_SVHN,
    PRIOR + "latent_dim": 16,
    PRIOR + "groups": [2, 2, 2, 10],
    PRIOR + "sampler.init_args.n_steps": 60,
    PRIOR + "sampler.init_args.step_size": 0.4,
    PRIOR + "energy_net.init_args.in_dim": 16,
    PRIOR + "energy_net.init_args.hidden": 50,
    PRIOR + "energy_net.init_args.depth": 4,
    DECODER + "sigma": pytest.approx((1 / 6) ** 0.5),  # Gfactor 3
    DECODER + "net.init_args.group_sizes": [2, 2, 2, 10],
    DECODER + "net.init_args.widths": [64, 64, 32, 32],
    DECODER + "net.init_args.top_hidden": [256, 256],
    DECODER + "net.init_args.injection": "add",
    ENC + "group_sizes": [2, 2, 2, 10],
    ENC + "widths": [32, 64, 64],
    ENC + "top_hidden": [256, 256],
    "trainer.max_epochs": 100,
}


@pytest.mark.parametrize("recipe,settings", [("svhn", HIER_SVHN), ("svhn_hs", HIER_SVHN_HS)])
def test_hierarchical_recipe_values_follow_the_official_code(recipe: str, settings: dict, capsys) -> None:
    config = resolve(f"recipes/hierarchical/{recipe}.yaml", capsys=capsys)
    for key, expected in settings.items():
        assert get(config, key) == expected, f"{recipe}: {key}"
    if recipe == "svhn":  # FID of 50,000 samples vs 50,000 training images from epoch 21 on, best kept
        (fid,) = callback_args(config, "FID")
        assert (fid["num_samples"], fid["num_reference"], fid["reference"]) == (50000, 50000, "train")
        assert (fid["first_epoch"], fid["every_n_epochs"], fid["score_final"]) == (21, 1, True)
        assert any(c.get("monitor") == "val/fid" for c in callback_args(config, "ModelCheckpoint"))
        assert callback_args(config, "ReconstructionMSE")


@pytest.mark.parametrize("recipe", ["mnist_anomaly", "fmnist_ood"])
def test_hierarchical_detection_recipes_average_the_last_10_evaluations(recipe: str, capsys) -> None:
    config = resolve(f"recipes/hierarchical/{recipe}.yaml", capsys=capsys)
    ((anomaly),) = callback_args(config, "AnomalyDetection")
    assert anomaly["last_k"] == 10
    assert get(config, PRIOR + "groups") == get(config, DECODER + "net.init_args.group_sizes") == [2, 2, 2]
    assert get(config, DECODER + "net.init_args.image_size") == 28


# ------------------------------------------------------------------------------------- text
@pytest.mark.parametrize("recipe", ["ptb", "snli", "yahoo", "ptb_offline", "ptb_offline_gaussian"])
def test_text_recipe_values(recipe: str, capsys: pytest.CaptureFixture) -> None:
    """LEBM's chains and prior on an LSTM decoder, the text evaluation (Pang et al. 2020, Table 2), and the
    offline PTB files (train on valid, test on test) with a Gaussian-prior twin that differs only
    in its prior."""
    config = resolve(f"recipes/latent_ebm/{recipe}.yaml", capsys=capsys)
    assert get(config, "data.init_args.dataset") == recipe.split("_")[0]
    assert get(config, DECODER + "net.class_path").endswith("LSTMTextGenerator")
    assert get(config, DECODER + "net.init_args.num_layers") == 1  # a one-layer LSTM (provisional)
    assert get(config, DECODER + "net.init_args.vocab_size") == get(config, "data.init_args.max_vocab_size")
    assert get(config, M + "posterior_sampler.init_args.n_steps") == 20
    callbacks = {c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]}
    assert {"TextGenerationMetrics", "MarginalLikelihood", "ModelCheckpoint"} <= callbacks
    assert not {"SampleGrid", "ReconstructionGrid"} & callbacks  # image grids do not apply to text
    ((nll),) = callback_args(config, "MarginalLikelihood")
    if recipe.startswith("ptb_offline"):
        assert get(config, "data.init_args.train_file") == "ptb.valid.txt"
        assert get(config, "data.init_args.test_file") == "ptb.test.txt"
        assert get(config, "data.init_args.max_vocab_size") == 6024  # the tokens of ptb.valid.txt + 3 specials
    else:
        assert nll["n_samples"] == 500
    gaussian = recipe.endswith("gaussian")
    assert get(config, M + "prior.class_path").endswith("GaussianPrior" if gaussian else "TiltedGaussianPrior")
    if not gaussian:
        assert get(config, PRIOR + "sampler.init_args.n_steps") == 60
        assert get(config, PRIOR + "sampler.init_args.step_size") == 0.4


@pytest.mark.parametrize("fragment", ["recipes/speed/fast.yaml", "recipes/speed/gpu.yaml"])
def test_a_speed_fragment_adds_fast_nets_after_any_recipe(fragment: str, capsys) -> None:
    config = resolve("recipes/latent_ebm/svhn.yaml", "-c", fragment, capsys=capsys)
    callbacks = [callback["class_path"] for callback in config["trainer"]["callbacks"]]
    assert callbacks[0] == "lebm.speed.CPUThreads" and callbacks[-1] == "lebm.speed.FastNets"
    assert "lebm.callbacks.FID" in callbacks  # the recipe's own callbacks stay
    assert config["trainer"]["callbacks"][-1]["init_args"]["compile"] is True
    assert config["trainer"]["precision"] == ("bf16-mixed" if "gpu" in fragment else config["trainer"]["precision"])


def test_the_eager_chains_fragment_turns_capture_off_after_any_recipe(capsys) -> None:
    config = resolve("recipes/dual_mcmc/cifar10.yaml", "-c", "recipes/speed/eager_chains.yaml", capsys=capsys)
    last = config["trainer"]["callbacks"][-1]
    assert last["class_path"] == "lebm.speed.ChainCapture" and last["init_args"]["enabled"] is False
    assert "lebm.callbacks.FID" in [callback["class_path"] for callback in config["trainer"]["callbacks"]]


@pytest.mark.parametrize(("fragment", "enabled"), [("recorded_iterations", True), ("eager_iterations", False)])
def test_the_recorded_iterations_fragments_turn_them_on_or_off_after_any_recipe(fragment, enabled, capsys) -> None:
    config = resolve("recipes/damc/svhn.yaml", "-c", f"recipes/speed/{fragment}.yaml", capsys=capsys)
    last = config["trainer"]["callbacks"][-1]
    assert last["class_path"] == "lebm.speed.RecordedIterations" and last["init_args"]["enabled"] is enabled
    assert len(config["trainer"]["callbacks"]) > 1  # the recipe's own callbacks stay


@pytest.mark.parametrize(
    "recipe", ["recipes/hierarchical/mnist_anomaly.yaml", "recipes/hierarchical/mnist_anomaly_offline.yaml"]
)
def test_the_hierarchical_anomaly_recipes_use_the_vlae_nets_and_mnist_yaml_switches_back(recipe: str, capsys) -> None:
    """CPU. The nets chosen on the validation split (docs/results_notes.md) are the VLAE-structured
    ones; ``-c _mnist.yaml`` after the recipe gives the former 3.3M nets with the recipe's groups,
    channels and image size (the fragment restates what a class change drops)."""
    chosen = resolve(recipe, capsys=capsys)
    assert get(chosen, DECODER + "net.class_path") == "lebm.nets.VLAEGenerator"
    assert get(chosen, M + "encoder.class_path") == "lebm.nets.VLAELadderEncoder"
    assert get(chosen, DECODER + "sigma") == pytest.approx(0.05**0.5)  # Gfactor 10, kept
    former = resolve(recipe, "-c", "recipes/hierarchical/_mnist.yaml", capsys=capsys)
    net, encoder = get(former, DECODER + "net"), get(former, M + "encoder")
    assert net["class_path"] == "lebm.nets.HierarchicalGenerator"
    assert encoder["class_path"] == "lebm.nets.LadderEncoder"
    for args in (net["init_args"], encoder["init_args"]):
        assert (args["group_sizes"], args["channels"], args["image_size"]) == ([2, 2, 2], 1, 28)
    assert net["init_args"]["widths"] == [128, 64, 32] and net["init_args"]["injection"] == "concat"


def test_the_dual_mcmc_mnist_recipe_revises_with_the_swept_chain(capsys) -> None:
    """CPU. The MNIST recipe's test-time chain is the one the revision sweep chose (the CIFAR-10
    test chain without noise, docs/results_notes.md); the training chains stay the official ones."""
    config = resolve("recipes/dual_mcmc/mnist_offline.yaml", capsys=capsys)
    chain = get(config, M + "test_data_sampler.init_args")
    assert (chain["n_steps"], chain["step_size"], chain["noise_std"]) == (70, 0.4, 0.0)
    assert get(config, M + "data_sampler.init_args.n_steps") == 30
    assert get(config, M + "data_sampler.init_args.noise_std") == pytest.approx(1e-3)


def test_the_paper_size_fragment_builds_the_3_2m_vlae_model_with_gates_at_0_1_and_a_kl_warm_up(capsys) -> None:
    """CPU. ``_mnist_paper_size.yaml`` after the offline hierarchical anomaly recipe: the VLAE
    structure (conv 64/128) at about the supplement's 3.2M parameters, gates starting at 0.1, the KL
    warm-up of 15,000 iterations; ``_ebm_authors.yaml`` restores the official EBM settings."""
    from lebm.config import build

    recipe = "recipes/hierarchical/mnist_anomaly_offline.yaml"
    config = resolve(
        recipe,
        "-c",
        "recipes/hierarchical/_mnist_paper_size.yaml",
        "-c",
        "recipes/hierarchical/_ebm_authors.yaml",
        capsys=capsys,
    )
    model = build(config["model"])
    count = sum(p.numel() for part in (model.decoder, model.encoder) for p in part.parameters())
    assert 3.0e6 < count < 3.6e6, count
    assert type(model.decoder_net).__name__ == "VLAEGenerator" and model.decoder_net.conv_widths == [64, 128]
    assert all(torch.all(gate == 0.1) for gate in model.decoder_net.gates)
    assert model.hparams.kl_warmup_steps == 15000 and float(model.kl_weight()) == 0.0
    assert model.hparams.prior_lr == 2e-6
    chain = get(config, M + "prior.init_args.sampler.init_args")
    assert (chain["n_steps"], chain["step_size"]) == (100, 0.3)
    today = build(resolve(recipe, capsys=capsys)["model"])
    assert sum(p.numel() for p in today.decoder.parameters()) > 5 * count / 2  # the 24.9M nets stay the default


@pytest.mark.parametrize(
    ("fragment", "callback"),
    [
        ("recipes/_diagnostics.yaml", "lebm.callbacks.ChainDiagnostics"),
        ("recipes/_recovery.yaml", "lebm.callbacks.DivergenceRecovery"),
    ],
)
def test_an_issue_36_fragment_adds_its_callback_after_any_recipe(fragment: str, callback: str, capsys) -> None:
    """CPU. The opt-in fragments of mixing diagnostics and divergence recovery keep the recipe's own
    callbacks and add theirs last, which then builds from the resolved settings."""
    from lebm.config import build

    config = resolve("recipes/latent_ebm/svhn.yaml", "-c", fragment, capsys=capsys)
    last = config["trainer"]["callbacks"][-1]
    assert last["class_path"] == callback
    assert "lebm.callbacks.FID" in [entry["class_path"] for entry in config["trainer"]["callbacks"]]
    assert type(build(last)).__name__ == callback.rsplit(".", 1)[1]


@pytest.mark.parametrize(
    ("fragment", "sigma"),
    [("recipes/damc/_eval_anomaly_det.yaml", None), ("recipes/damc/_eval_anomaly_det_heldout1.yaml", 0.1)],
)
def test_damcs_official_rescoring_fragments_run_5_noise_free_steps_and_held_out_1_at_sigma_0_1(
    fragment: str, sigma: float | None, capsys
) -> None:
    """Device: CPU. ``eval_anomaly_det.py``: ``Q(x)`` and 5 noise-free steps of size 0.1 (training
    evaluates with 10), the chain's likelihood at 0.1 for held-out 1 and at the trained 1.0 otherwise;
    the model still trains with its recipe's sigma and keeps the best-AUPRC checkpoint."""
    config = resolve("recipes/damc/mnist_anomaly.yaml", "-c", fragment, capsys=capsys)
    chain = get(config, "model.init_args.evaluation_sampler")
    assert chain["class_path"] == "lebm.samplers.Langevin"
    assert (chain["init_args"]["n_steps"], chain["init_args"]["step_size"], chain["init_args"]["noise_std"]) == (
        5,
        0.1,
        0.0,
    )
    assert get(config, "model.init_args.evaluation_sigma") == sigma
    assert get(config, "model.init_args.decoder.init_args.sigma") == 1.0
    kept = [c for c in callback_args(config, "ModelCheckpoint") if c.get("monitor")]
    assert kept == [{**kept[0], "monitor": "val/auprc_trapezoid", "mode": "max", "filename": "best-auprc"}]


def test_a_recipe_read_again_is_its_current_text_and_each_caller_gets_its_own_copy(tmp_path: Path) -> None:
    """CPU. ``read_recipe`` keeps what it parsed (a command reads a shared base once per recipe that
    includes it), but a caller's change to what it got is not seen by the next reader, an edited file
    is read anew, and a file broken after a good read is refused."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trainer:\n  max_epochs: 3\n")
    read_recipe(recipe)["trainer"]["max_epochs"] = 99
    assert read_recipe(recipe) == {"trainer": {"max_epochs": 3}}
    recipe.write_text("trainer:\n  max_epochs: 4\n")
    assert read_recipe(recipe) == {"trainer": {"max_epochs": 4}}
    recipe.write_text("trainer:\n  max_epochs: 4\n  max_epochs: 5\n")
    with pytest.raises(RecipeError, match="written twice"):
        read_recipe(recipe)
