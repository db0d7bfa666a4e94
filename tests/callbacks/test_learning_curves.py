"""LearningCurves: ``curves.png`` drawn from the run's MetricsTable, a panel per training loss and
validation value, paper targets as lines; refused settings in one line. Device: CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import LearningCurves
from lebm.callbacks.curves import curves_figure
from lebm.loggers import MetricsTable
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


def tiny_model() -> LatentEBM:
    prior = TiltedGaussianPrior(2, EnergyMLP(2, hidden=8), sampler=Langevin(2, 0.3))
    return LatentEBM(GaussianDecoder(MLPGenerator(2, (1, 8, 8), hidden=8)), prior, posterior_sampler=Langevin(2, 0.1))


def images(n: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(torch.rand(n, 1, 8, 8) * 2 - 1), batch_size=4)


@pytest.mark.usefixtures("one_thread")
def test_a_run_draws_its_losses_and_validation_values(tmp_path: Path) -> None:
    table = MetricsTable(str(tmp_path))
    curves = LearningCurves(every_n_epochs=5, targets={"val/nll": 50.0})
    trainer = quiet_trainer(
        accelerator="cpu",
        default_root_dir=str(tmp_path),
        logger=[table],
        callbacks=[curves],
        max_epochs=2,
        log_every_n_steps=1,
        inference_mode=False,
        num_sanity_val_steps=0,
    )
    model = tiny_model()
    trainer.fit(model, images(), images())
    assert curves.curve_names(table, model) == ["train/decoder_nll", "train/prior_loss", "val/nll"]
    picture = Image.open(tmp_path / "curves.png")
    assert picture.width >= 1000 and picture.height >= 250  # a row of three panels


def test_each_curve_is_its_logged_series_and_a_target_is_a_line() -> None:
    table = MetricsTable(".")
    for step, (loss, nll) in enumerate([(3.0, None), (2.0, 60.0), (1.0, 55.0)]):
        table.log_metrics({"train/loss": loss, **({"val/nll": nll} if nll else {})}, step=step)
    figure = curves_figure(table, ["train/loss", "val/nll"], {"val/nll": 50.0}, "run")
    loss_panel, nll_panel = figure.axes[:2]
    assert [line.get_ydata().tolist() for line in loss_panel.lines] == [[3.0, 2.0, 1.0]]
    series, target = nll_panel.lines
    assert series.get_xdata().tolist() == [1, 2] and series.get_ydata().tolist() == [60.0, 55.0]
    assert set(target.get_ydata()) == {50.0} and target.get_linestyle() == "--"
    assert nll_panel.get_title() == "val/nll"


def test_a_single_reading_is_a_dot_and_values_that_are_not_finite_are_left_out() -> None:
    table = MetricsTable(".")
    table.log_metrics({"train/loss": 2.0}, step=9)  # a 1-epoch run of 14 batches logs one row
    for step, value in enumerate([1.0, float("inf"), 3.0, float("nan")]):
        table.log_metrics({"val/nll": value}, step=20 + step)
    loss_panel, nll_panel = curves_figure(table, ["train/loss", "val/nll"], {}, "run").axes[:2]
    (loss,) = loss_panel.lines
    assert loss.get_ydata().tolist() == [2.0] and loss.get_marker() == "o"
    assert nll_panel.lines[0].get_ydata().tolist() == [1.0, 3.0]
    assert nll_panel.get_title() == "val/nll (2 not finite)"


def test_a_target_the_run_does_not_log_is_named_at_the_start(tmp_path: Path) -> None:
    curves = LearningCurves(targets={"val/fid": 29.44, "val/nll": 50.0})
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[curves], max_epochs=1)
    with pytest.warns(UserWarning, match=r"targets \['val/fid'\] name no value this run logs"):
        curves.setup(trainer, tiny_model(), "fit")


def test_without_a_table_nothing_is_drawn(tmp_path: Path) -> None:
    trainer = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), max_epochs=1)
    assert LearningCurves().draw(trainer, tiny_model()) is None
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"every_n_epochs": 0}, "every_n_epochs must be an int >= 1"),
        ({"targets": {"val/fid": "low"}}, "targets must map logged names to numbers"),
        ({"targets": {"val/fid": float("nan")}}, "must be a finite number"),
    ],
)
def test_wrong_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearningCurves(**settings)


def test_curves_png_has_a_panel_per_curve_and_a_damc_run_is_titled_with_its_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four curves (two losses, two validation values) on a 2 x 3 figure: four panels shown, in
    order, the two spare ones hidden; the title names the run folder's recipe and the method."""
    from types import SimpleNamespace

    import lebm.callbacks.curves as curves_module

    class DAMC:  # the title reads the method's class name, the panels its progress_bar_names
        progress_bar_names = ("train/decoder_loss", "train/prior_loss", "train/not_logged")

    run = tmp_path / "runs" / "damc" / "quickstart"
    table = MetricsTable(str(run))
    for step in range(3):
        table.log_metrics({"train/decoder_loss": 3.0 - step, "train/prior_loss": 0.1 * step}, step=step)
    table.log_metrics({"val/nll": 9.0, "val/fid": 120.0}, step=2)
    drawn: list = []
    monkeypatch.setattr(curves_module, "save_figure", lambda figure, path: drawn.append((figure, path)))
    trainer = SimpleNamespace(loggers=[table], default_root_dir=str(run), global_step=3)
    assert LearningCurves().draw(trainer, DAMC()) == str(run / "curves.png")
    ((figure, path),) = drawn
    shown = [panel.get_title() for panel in figure.axes if panel.get_visible()]
    assert shown == ["train/decoder_loss", "train/prior_loss", "val/fid", "val/nll"]
    assert len(figure.axes) == 6 and figure.get_suptitle() == "damc/quickstart (DAMC): 3 training iterations"
    assert path == str(run / "curves.png")


#: The columns an anomaly run's metrics.csv holds after one evaluation (LatentEBM's, AnomalyDetection's
#: and ReconstructionMSE's), the bookkeeping ones among them.
ANOMALY_COLUMNS = {
    "val/auprc": 0.41,
    "val/auroc": 0.55,
    "val/mse": 0.3,
    "val/nll": 900.0,
    "val/auprc_chance": 0.388,
    "val/auprc_above_chance": 0.022,
    "val/n_examples": 3000.0,
    "val/auprc_best": 0.41,
    "val/auprc_best_of": 1.0,
    "val/auprc_last_k_mean": 0.41,
    "val/auprc_last_k_std": 0.0,
    "val/auprc_trapezoid": 0.4,
    "val/auprc_trapezoid_best": 0.4,
    "val/auprc_trapezoid_last_k_mean": 0.4,
    "val/auprc_trapezoid_last_k_std": 0.0,
    "val/auprc_reconstruction_term": 0.4,
    "val/auprc_reconstruction_term_last_k_mean": 0.4,
    "val/auroc_reconstruction_term": 0.5,
    "val/auprc_prior_term": 0.38,
    "val/auprc_prior_term_last_k_mean": 0.38,
    "val/auroc_prior_term": 0.5,
    "val/auprc_tilt_term": 0.37,
    "val/auroc_tilt_term": 0.45,
    "val/auprc_score_sse": 0.39,
    "val/auroc_score_sse": 0.5,
    "val/auprc_score_sigma_1": 0.39,
    "val/auroc_score_sigma_1": 0.5,
    **{
        f"val/{term}_{kind}_{statistic}": 1.0
        for term in ("score", "reconstruction_term", "prior_term", "tilt_term", "score_sse", "score_sigma_1")
        for kind in ("normal", "anomaly")
        for statistic in ("mean", "std")
    },
}


def anomaly_table(chances: tuple[float, ...] = (0.388, 0.388)) -> MetricsTable:
    """A table of two evaluations of an anomaly run, with its training losses at each step."""
    table = MetricsTable(".")
    for step, chance in enumerate(chances):
        table.log_metrics({"train/decoder_nll": 5.0 - step, "train/prior_loss": 0.1}, step=step)
        table.log_metrics({**ANOMALY_COLUMNS, "val/auprc_chance": chance, "val/auprc": [0.4, 0.45][step]}, step=step)
    return table


def test_an_anomaly_run_shows_auprc_auroc_mse_and_nll_first_and_no_bookkeeping_panel() -> None:
    names = LearningCurves().curve_names(anomaly_table(), tiny_model())
    assert names == ["val/auprc", "val/auroc", "val/mse", "val/nll", "train/decoder_nll", "train/prior_loss"]
    chosen = LearningCurves(first=["val/auprc_best"]).curve_names(anomaly_table(), tiny_model())
    assert chosen[:4] == ["val/auprc_best", "train/decoder_nll", "train/prior_loss", "val/auprc"]  # given: drawn


def test_the_auprc_panel_draws_the_paper_value_and_the_splits_chance_as_dashed_lines() -> None:
    table = anomaly_table()
    figure = curves_figure(table, ["val/auprc", "val/auroc"], {"val/auprc": 0.336}, "run")
    auprc, auroc = figure.axes[:2]
    series, paper, chance = auprc.lines
    assert series.get_ydata().tolist() == [0.4, 0.45]
    assert set(paper.get_ydata()) == {0.336} and paper.get_linestyle() == "--"
    assert set(chance.get_ydata()) == {0.388} and chance.get_linestyle() == "--"
    assert [text.get_text() for text in auprc.get_legend().get_texts()] == ["paper: 0.336", "chance: 0.388"]
    series, half = auroc.lines  # the AUROC panel: its series and a random score's 0.5
    assert set(half.get_ydata()) == {0.5} and half.get_linestyle() == "--"
    assert [text.get_text() for text in auroc.get_legend().get_texts()] == ["chance: 0.5"]


def test_the_no_model_baseline_is_dotted_and_the_untrained_regime_shaded_in_both_ranking_panels() -> None:
    """CPU. A table with ``val/auprc_no_model`` and ``val/auroc_no_model``: each ranking panel draws the
    baseline (dotted, its value in the legend) and, given ``untrained_below``, shades the updates before
    it, up to the last update drawn; no panel of their own for the no-model columns."""
    table = anomaly_table()
    for step in (0, 1):
        table.log_metrics({"val/auprc_no_model": 0.98, "val/auroc_no_model": 0.99}, step=step)
    assert "val/auprc_no_model" not in LearningCurves().curve_names(table, tiny_model())
    figure = curves_figure(table, ["val/auprc", "val/auroc"], {}, "run", untrained_below=500)
    for panel, level in zip(figure.axes[:2], (0.98, 0.99), strict=True):
        dotted = [line for line in panel.lines if line.get_linestyle() == ":"]
        assert len(dotted) == 1 and set(dotted[0].get_ydata()) == {level}
        labels = [text.get_text() for text in panel.get_legend().get_texts()]
        assert f"no model: {level:.3f}" in labels and "untrained regime (< 500 updates)" in labels
        (shade,) = panel.patches
        assert shade.get_x() == 0 and shade.get_width() == 1  # up to the last update drawn (1), not to 500
    plain = curves_figure(table, ["val/auprc"], {}, "run")
    assert not plain.axes[0].patches  # no untrained_below: nothing shaded
    labelled = curves_figure(table, ["val/auprc"], {"val/auprc": 0.991}, "run", 0, {"val/auprc": "paper (best of N)"})
    assert "paper (best of N): 0.991" in [text.get_text() for text in labelled.axes[0].get_legend().get_texts()]


def test_a_paper_value_the_no_model_score_reaches_is_not_drawn_and_the_legend_says_why() -> None:
    """CPU. Held-out 1: the paper's 0.336 under a no-model AUPRC of 0.985 gets no line (a curve above
    it would say nothing of the model), a legend entry instead; a paper value above the no-model
    score keeps its dashed line."""
    table = anomaly_table()
    for step in (0, 1):
        table.log_metrics({"val/auprc_no_model": 0.985}, step=step)
    labelled = {"val/auprc": "paper, last 10"}
    solved = curves_figure(table, ["val/auprc"], {"val/auprc": 0.336}, "run", 0, labelled).axes[0]
    assert not [line for line in solved.lines if set(line.get_ydata()) == {0.336}]
    labels = [text.get_text() for text in solved.get_legend().get_texts()]
    assert "paper, last 10: 0.336, not drawn: the no-model score (0.985) reaches it" in labels
    above = curves_figure(table, ["val/auprc"], {"val/auprc": 0.99}, "run").axes[0]
    assert [line.get_linestyle() for line in above.lines if set(line.get_ydata()) == {0.99}] == ["--"]


def test_an_auroc_value_the_no_model_score_reaches_is_not_drawn_either() -> None:
    """CPU. The rule holds on the AUROC panel too: a paper AUROC of 0.9 under a no-model AUROC of 0.99
    gets a legend entry, no line; one above it keeps its dashed line."""
    table = anomaly_table()
    for step in (0, 1):
        table.log_metrics({"val/auroc_no_model": 0.99}, step=step)
    solved = curves_figure(table, ["val/auroc"], {"val/auroc": 0.9}, "run").axes[0]
    assert not [line for line in solved.lines if set(line.get_ydata()) == {0.9}]
    labels = [text.get_text() for text in solved.get_legend().get_texts()]
    assert "paper: 0.9, not drawn: the no-model score (0.990) reaches it" in labels
    above = curves_figure(table, ["val/auroc"], {"val/auroc": 0.995}, "run").axes[0]
    assert [line.get_linestyle() for line in above.lines if set(line.get_ydata()) == {0.995}] == ["--"]


def test_a_chance_that_changes_is_drawn_as_its_series_and_a_run_without_it_gets_none() -> None:
    figure = curves_figure(anomaly_table(chances=(0.39, 0.4)), ["val/auprc"], {}, "run")
    series, chance = figure.axes[0].lines
    assert chance.get_xdata().tolist() == [0, 1] and chance.get_ydata().tolist() == [0.39, 0.4]
    assert chance.get_linestyle() == "--"
    table = MetricsTable(".")
    table.log_metrics({"val/auprc": 0.5}, step=3)  # a table written before the chance was logged
    (panel,) = [axes for axes in curves_figure(table, ["val/auprc"], {"val/auprc": 0.336}, "run").axes[:1]]
    assert len(panel.lines) == 2  # the series and the paper line
