"""The results pages (docs/results.md, docs/results/details.md, the plots) are generated from the
JSON records and are up to date; no results table is wider than 9 columns; the status table has a
row per paper target a recipe names; every experiment with a curve has its plot; the quickstart's
figures in the timings agree with its record. Device: CPU, writing only under tmp_path."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.scripts import load_script, run_here

REPO = Path(__file__).resolve().parents[1]
RESULTS_PAGES = [
    REPO / "docs" / "results.md",
    REPO / "docs" / "results_notes.md",
    *REPO.glob("docs/results/*.md"),
    # the results log's entries that hold a table (every page here must have one)
    *(page for page in sorted(REPO.glob("docs/results/log/*.md")) if "\n|---" in page.read_text()),
]
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
PNG = b"\x89PNG\r\n\x1a\n"
ANOMALY = {"experiment": "mnist_anomaly_offline", "metric": "auprc"}
LEBM_ROW = {"method": "LEBM", "lebm_method": "LatentEBM", "experiment": "mnist_anomaly", "metric": "auprc"}


def make_results_md():
    return load_script("scripts/make_results_md.py")


def table_widths(text: str) -> list[int]:
    """The number of columns of every Markdown table in ``text`` (read from its separator line)."""
    return [line.strip().count("|") - 1 for line in text.splitlines() if SEPARATOR.match(line.strip())]


def table_after(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells) of the first table after ``heading``."""
    lines = text.splitlines()[text.splitlines().index(heading) :]
    start = next(i for i, line in enumerate(lines) if SEPARATOR.match(line))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_results_pages_are_generated_from_the_records() -> None:
    """``python scripts/make_results_md.py --check``, run in this process (:func:`run_here`): it exits
    with status 1, naming the pages, when one is out of date."""
    finished = run_here("scripts/make_results_md.py", "--check")
    assert finished.returncode == 0, finished.stderr


def test_records_have_the_required_fields() -> None:
    for path in [*REPO.glob("docs/results/*.json"), *REPO.glob("docs/results/published/*.json")]:
        for record in json.loads(path.read_text()):
            for key in ("method", "experiment", "metric", "value"):
                assert key in record, (path.name, key)
            assert isinstance(record["value"], (int, float))


def test_no_results_table_is_wider_than_nine_columns() -> None:
    assert (REPO / "docs" / "results" / "details.md") in RESULTS_PAGES
    for page in RESULTS_PAGES:
        widths = table_widths(page.read_text())
        assert widths, page.name
        assert max(widths) <= 9, (page.name, max(widths))
    assert table_widths("| a | b |\n|---|---|\n| 1 | 2 |\n") == [2]  # the reader itself


def test_run_paths_are_on_the_details_page_and_in_no_table_of_the_results_page() -> None:
    """A run folder's path in a table cell widens the table past a 1280-pixel screen."""
    page = (REPO / "docs" / "results.md").read_text()
    details = (REPO / "docs" / "results" / "details.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("|")]
    assert [row for row in rows if "runs/" in row] == []
    budgets = [
        record.get("budget", "") for path in REPO.glob("docs/results/*.json") for record in json.loads(path.read_text())
    ]
    paths = {path for budget in budgets for path in re.findall(r"\bruns/\S+", budget)}
    assert paths and [path for path in sorted(paths) if path not in details] == []
    short_budget = load_script("scripts/results_records.py").short_budget
    budget = "no training: runs/a/b/checkpoints/last.ckpt (3 epochs, 1060 updates)"
    assert short_budget(budget) == "no training: a checkpoint (3 epochs)"


def test_the_status_table_has_a_row_per_paper_target_a_recipe_names() -> None:
    statuses = load_script("scripts/results_status.py")
    targets = statuses.named_targets(REPO / "recipes")
    assert "latent_ebm/svhn" in targets and "latent_ebm/mnist_anomaly_offline" in targets
    assert "quickstart" not in targets and "latent_ebm/ptb_offline_gaussian" not in targets
    text = (REPO / "docs" / "results.md").read_text()
    assert text.index("## Reproduction status") < text.index("\n## ", text.index("## Reproduction status") + 1)
    rows = table_after(text, "## Reproduction status")
    named = {name for row in rows for name in re.sub(r"<wbr>|</?code>", "", row[0]).split("<br>")}
    assert set(targets) <= named, sorted(set(targets) - named)
    for row in rows:
        assert len(row) <= 8
        status = row[-1].split("**")[1]
        assert status in statuses.STATUSES or statuses.EXPLAINED.fullmatch(status), row[-1]


def anomaly_record(seed: int, readings: list[tuple[int, float]], digit: int = 4) -> dict:
    """A checkpoint-readings record of the shape anomaly_protocols.py writes: (update, test AUPRC) pairs."""
    return {
        "experiment": "budget",
        "method": "M",
        "metric": "auprc",
        "digit": digit,
        "seed": seed,
        "value": readings[-1][1],
        "readings": [{"update": u, "test": {"score": {"auprc": a}}} for u, a in readings],
    }


def status_row(status: str, **extra) -> dict:
    return {"recipes": ["r"], "ours": [{"where": {"experiment": "budget"}}], "status": status, "reason": "", **extra}


def test_a_gpu_is_blamed_only_where_a_record_shows_the_reading_still_rising() -> None:
    """'out of reach offline (GPU)' needs records whose last reading is above the one at half the
    budget; flat seeds are named, and a row that ran nothing at the paper's scale says so."""
    statuses = load_script("scripts/results_status.py")
    rising = [anomaly_record(1, [(4000, 0.50), (8000, 0.55), (16000, 0.57)])]
    flat = [*rising, anomaly_record(2, [(500, 0.48), (1000, 0.47), (1500, 0.47)])]
    gpu = "out of reach offline (GPU)"
    where = {"where": {"experiment": "budget"}}
    statuses.check_status(status_row(gpu, rising=where), rising)
    with pytest.raises(ValueError, match="no 'rising' records"):
        statuses.check_status(status_row(gpu), rising)
    with pytest.raises(ValueError, match=r"seeds \[2\] read no higher"):
        statuses.check_status(status_row(gpu, rising=where), flat)
    statuses.check_status(status_row(gpu, not_run="the 60k digits"), flat)
    statuses.check_status(status_row("below the paper: unexplained"), flat)
    explained = "below the paper: explained by the budget (measured)"
    statuses.check_status(status_row(explained, explained_by=where), flat)
    with pytest.raises(ValueError, match="explained_by"):
        statuses.check_status(status_row(explained), flat)
    with pytest.raises(ValueError, match="is not one of"):
        statuses.check_status(status_row("below the paper: the budget"), flat)


def test_a_seeds_selector_shows_each_digits_mean_and_sample_sd() -> None:
    statuses = load_script("scripts/results_status.py")
    records = [anomaly_record(s, [(1, v)]) for s, v in ((1, 0.5), (2, 0.6), (3, 0.7))]
    records.append(anomaly_record(1, [(1, 0.3)], digit=1))
    text = statuses.ours_text({"where": {"experiment": "budget"}, "seeds": True, "label": "ours:"}, records)
    assert text == "ours: 0.300 (1 seed) / 0.600 ± 0.100 (3 seeds)"


def test_every_experiment_with_a_curve_has_its_plot_on_the_page() -> None:
    module = make_results_md()
    inputs = module.read_inputs()
    experiments = module.plotted(inputs.records)
    assert "mnist_anomaly_offline" in experiments
    page = (REPO / "docs" / "results.md").read_text()
    for experiment in experiments:
        plot = module.PLOTS / f"{experiment}.png"
        assert plot.read_bytes().startswith(PNG), plot
        assert f"(results/plots/{experiment}.png)" in page


def test_a_plot_draws_each_curve_and_the_papers_value_in_its_colour(tmp_path: Path) -> None:
    module = make_results_md()
    plots = load_script("scripts/results_plots.py")
    ours = [
        {**ANOMALY, "method": "LatentEBM", "digit": 1, "value": 0.3, "auprc_by_epoch": [0.2, 0.25, 0.3]},
        {**ANOMALY, "method": "MultiStageNCE", "digit": 1, "value": 0.28, "auprc_by_epoch": [0.21, 0.28]},
        {**ANOMALY, "method": "LatentEBM", "digit": 4, "value": 0.5},  # no curve
    ]
    published = [{**LEBM_ROW, "digit": 1, "value": 0.336}]
    fig = plots.figure("mnist_anomaly_offline", ours, published)
    axes = fig.axes[0]
    curves = {line.get_label(): line for line in axes.get_lines()}
    assert list(curves["LatentEBM"].get_ydata()) == [0.2, 0.25, 0.3]
    assert list(curves["MultiStageNCE"].get_xdata()) == [1, 2]
    paper = curves["paper: LEBM"]
    assert list(paper.get_ydata()) == [0.336, 0.336] and paper.get_color() == curves["LatentEBM"].get_color()
    module.write_plots(module.Inputs(ours, published), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist_anomaly_offline.png"]
    assert (tmp_path / "mnist_anomaly_offline.png").read_bytes().startswith(PNG)


def test_check_finds_a_stale_page_and_a_missing_or_extra_plot(tmp_path: Path, monkeypatch) -> None:
    module = make_results_md()
    monkeypatch.setattr(module, "REPO", tmp_path)
    monkeypatch.setattr(module, "OUTPUT", tmp_path / "results.md")
    monkeypatch.setattr(module, "DETAILS", tmp_path / "results" / "details.md")
    monkeypatch.setattr(module, "PLOTS", tmp_path / "results" / "plots")
    ours = [{**ANOMALY, "method": "LatentEBM", "digit": 1, "value": 0.3, "auprc_by_epoch": [0.2, 0.3]}]
    inputs = module.Inputs(ours, [{**LEBM_ROW, "digit": 1, "value": 0.336}])
    assert len(module.out_of_date(inputs)) == 3
    module.DETAILS.parent.mkdir()
    for path, text in module.pages(inputs).items():
        path.write_text(text)
    module.write_plots(inputs, module.PLOTS)
    assert module.out_of_date(inputs) == []
    (module.PLOTS / "old.png").write_bytes(PNG)
    assert module.out_of_date(inputs) == ["results/plots/*.png (wanted: ['mnist_anomaly_offline.png'])"]
    module.write_plots(inputs, module.PLOTS)  # removes the plot no record gives
    module.OUTPUT.write_text(module.render(ours, inputs.published).replace("0.300", "0.301"))
    assert module.out_of_date(inputs) == ["results.md"]


def test_an_experiment_gets_one_narrow_table_with_the_papers_value_and_the_ratio() -> None:
    """Device: CPU. A FID experiment: ours, the paper's value and their ratio."""
    module = make_results_md()
    ours = [
        {
            "experiment": "svhn",
            "metric": "fid",
            "method": "LatentEBM",
            "value": 35.0,
            "budget": "10 epochs, batch 100",
            "device": "cpu (x86_64, 1 threads)",
            "date": "2026-11-21",
        }
    ]
    published = [
        {**LEBM_ROW, "experiment": "svhn", "metric": "fid", "value": 29.44, "source": "Pang et al. 2020, Table 1"}
    ]
    text = module.render(ours, published).replace("\u00a0", " ")
    assert "| method | setting | ours | paper | ratio | budget | device | date |" in text
    row = "| LatentEBM | – | 35.000 | 29.440 | 1.19 | 10 epochs | CPU, 1 thread | 2026-11-21 |"
    assert row in text.splitlines()
    assert "Pang et al. 2020, Table 1, row LEBM" in text
    no_paper = module.render([{**ours[0], "method": "MultiStageNCE"}], published)
    assert "| method | setting | ours | budget | device | date |" in no_paper  # no empty columns


def test_an_anomaly_table_reads_each_auprc_against_chance_and_says_how_the_paper_selected() -> None:
    """Device: CPU. An AUPRC per held-out digit gets its AUROC and chance beside it, no ratio (it
    rewards a worse detector below chance), the paper's value marked when it is below chance, and
    the paper's selection in the line above the table."""
    module = make_results_md()
    base = {**ANOMALY, "method": "LatentEBM", "std": 0.01, "budget": "10 epochs", "date": "2026-11-21"}
    ours = [
        {**base, "digit": 1, "value": 0.25, "auroc": 0.16, "chance": 0.388, "device": "cpu (x86_64, 1 threads)"},
        {**base, "digit": 4, "value": 0.5, "chance": 0.351, "test_auroc": 0.7, "device": "cpu (x86_64, 1 threads)"},
    ]
    ours[0]["no_model"] = {"test": {"auprc": 0.98, "best": "untrained_level"}}
    ours[1]["no_model"] = {"test": {"auprc": 0.35, "best": "mean_training_image"}}
    selection = "mean over the last 10 epochs"
    published = [
        {
            **LEBM_ROW,
            "digit": 1,
            "value": 0.336,
            "std": 0.008,
            "source": "Pang et al. 2020, Table 3",
            "selection": selection,
        },
        {
            **LEBM_ROW,
            "digit": 4,
            "value": 0.630,
            "std": 0.017,
            "source": "Pang et al. 2020, Table 3",
            "selection": selection,
        },
    ]
    text = module.render(ours, published).replace("\u00a0", " ")
    lines = text.splitlines()
    assert "| method | setting | ours | selection | updates | AUROC | chance | no model | paper |" in lines
    below = (
        "| LatentEBM | held-out 1 (solved with no model) | 0.250 ± 0.010 (no better than no model) | one test reading "
        "| 10 epochs (updates not recorded) | 0.160 | 0.388 | 0.980 (untrained level) | 0.336 ± 0.008, below chance |"
    )
    assert below in lines
    above = (
        "| LatentEBM | held-out 4 | 0.500 ± 0.010 | one test reading | 10 epochs (updates not recorded) | 0.700 "
        "| 0.351 | 0.350 (mean training image) | 0.630 ± 0.017 |"
    )
    assert above in lines
    assert "row LEBM (mean over the last 10 epochs)" in text and "ratio" not in text.split("## mnist_anomaly")[1]


def test_a_record_with_readings_shows_both_selections_and_the_terms_at_the_validations_choice() -> None:
    """Device: CPU. The second anomaly table gives the best-of-N test reading (the paper's way) and
    the test reading at the validation's best apart, and the terms of that checkpoint's test
    reading, not of the last or the best-of-N one."""
    module = make_results_md()

    def reading(update: int, val: float, test: float, reconstruction: tuple[float, float]) -> dict:
        term = {"normal_mean": reconstruction[0], "anomaly_mean": reconstruction[1], "auroc": 0.3}
        prior = {"normal_mean": 4.0, "anomaly_mean": 9.0 + update, "auroc": 0.8}
        test_reading = {"score": {"auprc": test}, "reconstruction_term": term, "prior_term": prior}
        return {"update": update, "val": {"score": {"auprc": val}}, "test": test_reading}

    record = {
        **ANOMALY,
        "experiment": "mnist_anomaly_protocols",
        "method": "LatentEBM",
        "digit": 1,
        "value": 0.30,
        "chance": 0.388,
        "budget": "3 updates",
        "date": "2026-11-26",
        "readings": [reading(1, 0.2, 0.45, (10, 20)), reading(2, 0.5, 0.30, (30, 40)), reading(3, 0.1, 0.2, (50, 60))],
        "best_of_test": {"update": 1, "test_auprc": 0.45, "test_auroc": 0.6},
        "validation_selected": {"update": 2, "test_auprc": 0.30, "test_auroc": 0.4},
        "last_mean": {"updates": [2, 3], "test_auprc": 0.25, "test_auprc_std": 0.05, "test_auroc": 0.35},
        "no_model": {"test": {"auprc": 0.98, "best": "untrained_level"}},
        "seed": 2,
    }
    text = module.render([record], []).replace("\u00a0", " ")
    rows = table_after(
        text,
        "| method | setting | best of N test readings (DAMC's selection) "
        "| mean of the last 10 test readings (LEBM's; the last 3 beside) "
        "| test, at the validation's best (ours) | chance / no model | reconstruction term: normal / held-out (AUROC) "
        "| prior term: normal / held-out (AUROC) |",
    )
    assert rows == [
        [
            "LatentEBM",
            "held-out 1 (solved with no model), seed 2",
            "0.450 (AUROC 0.600; best of 3)",
            "0.317 ± 0.126 (AUROC –; last 3); last 2: 0.250",  # LEBM's: all 3 readings (fewer than 10)
            "0.300 (AUROC 0.400; update 2, untrained: under 100)",
            "0.388 / 0.980",
            "30.0 / 40.0 (0.300)",
            "4.0 / 11.0 (0.800)",
        ]
    ]


def test_an_experiment_of_many_metrics_gets_a_pivot_table_and_the_figure_its_records_name() -> None:
    module = make_results_md()
    metrics = ["pixel_fd", "test_mse", "auroc", "rhat", "acceptance", "seconds"]
    ours = [
        {
            "experiment": "sampler_study",
            "method": "LatentEBM",
            "setting": f"digits: {arm}",
            "metric": metric,
            "value": index + 0.5 * column,
            "figure": "images/sampler_study.png",
        }
        for index, arm in enumerate(["ula", "mala"])
        for column, metric in enumerate(metrics)
    ]
    text = module.render(ours, []).replace("\u00a0", " ")
    header = "| method | setting | `acceptance` | `auroc` | `pixel_fd` | `rhat` | `seconds` | `test_mse` |"
    assert header in text  # the metrics in columns, sorted
    assert "| LatentEBM | digits: mala | 3.000 | 2.000 | 1.000 | 2.500 | 3.500 | 1.500 |" in text.splitlines()
    assert text.count("![sampler_study](images/sampler_study.png)") == 1  # named by every record, shown once


def test_details_hold_the_curve_the_terms_and_every_papers_row() -> None:
    module = make_results_md()
    record = {"method": "JointHierarchicalEBM", "experiment": "mnist_anomaly_selection", "metric": "auprc"}
    ours = [
        {**record, "digit": 1, "setting": "base", "value": 0.3, "auprc_prior_term": 0.71, "test_auprc": 0.29},
        {**record, "digit": 1, "setting": "gfactor1", "value": 0.5, "auprc_reconstruction_term": 0.42},
        {**record, "digit": 4, "value": 0.6, "auprc_by_epoch": [0.5, 0.6]},
    ]
    published = [
        {**LEBM_ROW, "digit": 1, "value": 0.336, "source": "Pang et al. 2020, Table 3"},
        {"method": "VAE", "experiment": "mnist_anomaly", "metric": "auprc", "digit": 4, "value": 0.337, "source": "S"},
    ]
    lines = module.render_details(ours, published).splitlines()
    assert "| method | setting | reconstruction term | prior term | test |" in lines
    assert "| JointHierarchicalEBM | base, held-out 1 | – | 0.710 | 0.290 |" in lines
    assert "| JointHierarchicalEBM | gfactor1, held-out 1 | 0.420 | – | – |" in lines
    assert "| JointHierarchicalEBM | held-out 4 | 0.500 0.600 |" in lines
    assert "| method | held-out 1 | held-out 4 |" in lines
    assert "| LEBM | 0.336 | – |" in lines and "| VAE | – | 0.337 |" in lines


def test_the_timings_quote_the_quickstart_records_fit_time() -> None:
    """docs/benchmarks.md states the quickstarts' wall-clock time as their record has it."""
    timings = (REPO / "docs" / "benchmarks.md").read_text().splitlines()
    for recipe, record in (
        ("quickstart", "latent_ebm_quickstart_digits.json"),
        ("multistage_nce/quickstart", "multistage_nce_quickstart_digits.json"),
    ):
        records = json.loads((REPO / "docs" / "results" / record).read_text())
        fit = next(r for r in records if r["metric"] == "fit_minutes")
        row = next(line for line in timings if line.startswith(f"| `lebm fit -c {recipe}` "))
        assert f"| {fit['date']} | {round(fit['value'] * 60)} s: `fit_minutes`" in row, row


def test_a_record_replaces_its_own_earlier_version_only(tmp_path: Path) -> None:
    save_record = load_script("experiments/mnist_anomaly_offline.py").save_record

    output = tmp_path / "records.json"
    identity = lambda r: (r["digit"], r["metric"], r.get("setting"))  # noqa: E731
    base = {"method": "M", "experiment": "e", "metric": "auprc"}
    save_record(output, {**base, "digit": 1, "setting": "a", "value": 0.1}, identity)
    save_record(output, {**base, "digit": 1, "setting": "b", "value": 0.2}, identity)
    save_record(output, {**base, "digit": 1, "setting": "a", "value": 0.3}, identity)
    records = json.loads(output.read_text())
    assert [(r["setting"], r["value"]) for r in records] == [("a", 0.3), ("b", 0.2)]


def test_a_record_keeps_each_terms_mean_of_the_last_evaluations_and_its_curve() -> None:
    """CPU. The anomaly runner reads the callback's state: each term's AUPRC is averaged over the
    same last k evaluations as the whole score's, and its per-epoch values are kept."""
    term_summaries = load_script("experiments/mnist_anomaly_offline.py").term_summaries

    state = {"history": [0.1, 0.2, 0.3], "term_history": {"prior_term": [0.9, 0.5, 0.7], "reconstruction_term": [0.2]}}
    summaries = term_summaries(state, k=2)
    assert summaries["auprc_prior_term"] == 0.6 and summaries["auprc_reconstruction_term"] == 0.2
    assert summaries["term_auprc_by_epoch"] == {"prior_term": [0.9, 0.5, 0.7], "reconstruction_term": [0.2]}
    assert term_summaries({"history": [0.5]}, k=3) == {}  # a method whose score has no terms


def test_runners_read_the_newest_last_checkpoint_not_a_stale_one(tmp_path: Path) -> None:
    """CPU. A fresh fit into a folder that still holds another process's ``last.ckpt`` saves its own
    as ``last-v1.ckpt``; the experiment runners must read that one."""
    import os

    newest_last_checkpoint = load_script("experiments/records.py").newest_last_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale, fresh, epoch = folder / "last.ckpt", folder / "last-v1.ckpt", folder / "epoch=9-step=90.ckpt"
    for age, path in ((300, stale), (100, fresh), (0, epoch)):
        path.write_bytes(b"")
        os.utime(path, (1e9 - age, 1e9 - age))
    assert newest_last_checkpoint(tmp_path) == fresh
    os.utime(stale, (2e9, 2e9))  # the other way round: the plain name is the newer one
    assert newest_last_checkpoint(tmp_path) == stale
    with pytest.raises(SystemExit, match="no last"):
        newest_last_checkpoint(tmp_path / "elsewhere")


def test_a_rescored_dual_mcmc_record_keeps_the_command_that_fitted_its_run() -> None:
    """CPU. ``dual_mcmc_mnist.py --skip-fit`` re-scores a run it did not fit: its records name the
    earlier records' fit command, whether those fitted the run or were themselves re-scores."""
    fit_command = load_script("experiments/dual_mcmc_mnist.py").fit_command

    fitted = [{"metric": "fid_raw", "command": "python experiments/dual_mcmc_mnist.py -- --trainer.max_epochs 6"}]
    assert fit_command(fitted) == fitted[0]["command"]
    rescored = [{"metric": "fid_raw", "command": "python experiments/dual_mcmc_mnist.py --skip-fit"}]
    assert fit_command(rescored) is None
    assert fit_command([{**rescored[0], "fit_command": fitted[0]["command"]}]) == fitted[0]["command"]


def test_a_record_holds_both_readings_and_the_papers_last_10(tmp_path: Path) -> None:
    """Device: CPU. From the callback's histories: average precision and trapezoid over the
    recipe's last k, and both over the last 10 (the papers' reading); the split and its overlap
    get their own columns in the details, and a cited-split row is labelled as such."""
    module = make_results_md()
    readings = load_script("experiments/mnist_anomaly_offline.py").readings

    history = [0.1 * i for i in range(12)]  # 0.0 ... 1.1
    state = {"history": history, "trapezoid_history": [v + 0.01 for v in history]}
    summary = readings(state, 3)
    assert summary["value"] == pytest.approx(1.0) and summary["n_evaluations"] == 3
    assert summary["auprc_trapezoid"] == pytest.approx(1.01)
    papers = summary["papers_reading"]
    assert papers["n_evaluations"] == 10 and papers["auprc"] == pytest.approx(0.65)
    assert papers["auprc_trapezoid"] == pytest.approx(0.66) and papers["auprc_std"] == pytest.approx(0.2872, abs=1e-4)
    record = {"method": "LatentEBM", "experiment": "mnist_anomaly_protocol", "metric": "auprc", "digit": 4}
    ours = [{**record, **summary, "data_split": "cited", "test_overlap": 0.51}]
    lines = module.render_details(ours, []).splitlines()
    header = next(line for line in lines if line.startswith("| method | setting | trapezoid AUPRC"))
    assert header.endswith("| trapezoid AUPRC | last 10: AP | last 10: trapezoid | test split in training |")
    assert "| LatentEBM | held-out 4, cited split | 1.010 | 0.650 | 0.660 | 0.510 |" in lines


def test_the_data_gap_pairs_the_evaluations_of_both_pools_at_equal_updates() -> None:
    """CPU. The full pool evaluated every 530 updates and the offline pool after every epoch of 106
    updates meet at 530 and 1,060 updates (epochs 5 and 10); an evaluation the offline run did not
    reach (1,590) or at no epoch's end (every 400) pairs with nothing."""
    common_points = load_script("experiments/anomaly_data_gap.py").common_points

    offline = {
        "auprc_by_epoch": [0.1 * i for i in range(1, 11)],
        "term_auprc_by_epoch": {"prior_term": [0.01 * i for i in range(1, 11)]},
    }
    full = {"auprc_by_epoch": [0.21, 0.22, 0.23], "term_auprc_by_epoch": {"prior_term": [0.6, 0.7, 0.8]}}
    points = common_points(full, 530, offline, 106)
    assert [tuple(round(value, 4) for value in p) for p in points] == [
        (530, 0.21, 0.5, 0.6, 0.05),
        (1060, 0.22, 1.0, 0.7, 0.1),
    ]
    assert common_points(full, 400, offline, 106) == []


def test_the_data_gap_is_the_full_pools_auprc_less_the_offline_pools() -> None:
    """CPU. Two common evaluations where the full pool reads 0.6 and 0.7 and the offline pool 0.3
    and 0.2: the record's value is 0.65, its offline value 0.25 and the gap +0.4 (the full pool's
    data helps)."""
    pool_means = load_script("experiments/anomaly_data_gap.py").pool_means

    points = [(530, 0.6, 0.3, 0.9, 0.1), (1060, 0.7, 0.2, 0.9, 0.1)]
    assert pool_means(points) == {"value": 0.65, "offline_value": 0.25, "gap": 0.4}


def test_a_full_pool_run_records_the_updates_each_evaluation_came_after() -> None:
    """CPU. ``evaluation_updates`` of ``mnist_anomaly_offline.py --pool full --val-every-steps 265``:
    the callback's readings when it kept them (a last, off-grid validation at 600 included), else
    265, 530, ... for an older checkpoint: never an evaluation "at 0 updates"."""
    evaluation_updates = load_script("experiments/mnist_anomaly_offline.py").evaluation_updates

    readings = [{"update": 265}, {"update": 530}, {"update": 600}]
    assert evaluation_updates({"history": [0.1, 0.2, 0.3], "readings": readings}, 265) == [265, 530, 600]
    assert evaluation_updates({"history": [0.1, 0.2]}, 265) == [265, 530]


def test_an_anomaly_row_without_an_auroc_points_to_the_re_read() -> None:
    """Device: CPU. A record kept before the AUROC was (old runs) is flagged in the line above its
    table, pointing to the protocols table; a table whose rows all have one says nothing more."""
    module = make_results_md()
    base = {**ANOMALY, "method": "LatentEBM", "digit": 1, "value": 0.25, "chance": 0.388, "budget": "1 epoch"}
    paper = [{**LEBM_ROW, "digit": 1, "value": 0.336, "source": "Pang et al. 2020, Table 3"}]
    old = module.render([base], paper).replace("\u00a0", " ")
    assert "Rows without an AUROC were recorded before it was kept" in old and "(#mnist_anomaly_protocols)" in old
    new = module.render([{**base, "auroc": 0.2}], paper).replace("\u00a0", " ")
    assert "Rows without an AUROC" not in new


def test_every_anomaly_row_states_its_selection_updates_and_seeds_and_flags_the_untrained() -> None:
    """Device: CPU. Seeds of one setting at one budget make one row (n, mean ± sample sd); a run at
    another budget stays apart; a reading under lebm's untrained threshold is flagged; the mean of
    the last test readings says it was read on the test split; the validation's choice says the
    test was read once."""
    module = make_results_md()
    base = {**ANOMALY, "method": "LatentEBM", "digit": 4, "chance": 0.34, "date": "2026-11-27"}
    chosen = {"split": "test, at the checkpoint of the highest validation AUPRC", "device": "cpu (x86_64, 1 threads)"}
    ours = [
        {**base, **chosen, "seed": 2, "value": 0.495, "auroc": 0.73, "budget": "500 updates, batch 100"},
        {**base, **chosen, "seed": 3, "value": 0.482, "auroc": 0.72, "budget": "500 updates, batch 100"},
        {**base, **chosen, "seed": 1, "value": 0.485, "auroc": 0.72, "budget": "1200 updates, batch 100"},
        {**base, "digit": 5, "value": 0.3, "n_evaluations": 3, "split": "test (the protocol)", "updates": 83},
    ]
    text = module.render(ours, []).replace("\u00a0", " ")
    rows = [line for line in text.splitlines() if line.startswith("| LatentEBM |")]
    assert len(rows) == 3
    assert any(
        "| held-out 4, 2 seeds (2, 3) | 0.488 ± 0.009 | validation-selected (test read once) | 500 |" in r for r in rows
    )
    assert any("| held-out 4, 1 seed (1) | 0.485 | validation-selected (test read once) | 1,200 |" in r for r in rows)
    (five,) = [r for r in rows if "held-out 5" in r]
    assert "| mean of the last 3 test readings (read on the test split, as the papers did) " in five
    assert "| 83 (untrained: under 100) |" in five
    header = "| method | setting | ours | selection | updates | AUROC | chance | no model | paper |"
    assert header in text and all(row.count("|") == header.count("|") for row in rows)


def test_a_validation_selected_row_names_the_checkpoints_it_read_and_flags_an_untrained_one() -> None:
    """Device: CPU. Seeds trained 500 updates each, read at the checkpoints their validation chose
    (350, 50 and 400): the updates cell names them, and seed 2's reading, at update 50, is flagged
    untrained (it measures the untrained generator's level), in both tables."""
    module = make_results_md()
    base = {**ANOMALY, "method": "LatentEBM", "digit": 4, "chance": 0.34, "date": "2026-11-28"}
    chosen = {"split": "test, at the checkpoint of the highest validation AUPRC", "budget": "500 updates, batch 100"}
    ours = [
        {**base, **chosen, "seed": seed, "value": value, "auroc": 0.7, "validation_selected": {"update": update}}
        for seed, value, update in ((1, 0.31, 350), (2, 0.32, 50), (3, 0.27, 400))
    ]
    text = module.render(ours, []).replace("\u00a0", " ")
    (row,) = [line for line in text.splitlines() if line.startswith("| LatentEBM |")]
    assert "| 500; read at 350, 50, 400 (untrained, under 100: seed 2) |" in row
    (alone,) = [line for line in module.render(ours[1:2], []).splitlines() if line.startswith("| LatentEBM |")]
    assert "| 500; read at 50 (untrained: under 100) |" in alone.replace("\u00a0", " ")


def anomaly_rows_of(records: list[dict]) -> list[dict[str, str]]:
    """The rows of ``records``' anomaly table on the results page, each as its cells by column name."""
    text = make_results_md().render(records, []).replace("\u00a0", " ")
    header = "| method | setting | ours | selection | updates | AUROC | chance | no model | paper |"
    names = [cell.strip() for cell in header.strip("|").split("|")]
    lines = [line for line in text.splitlines() if line.startswith("| LatentEBM |")]
    return [dict(zip(names, (cell.strip() for cell in line.strip("|").split(" | ")), strict=True)) for line in lines]


def test_a_reading_at_exactly_lebms_untrained_threshold_is_not_flagged() -> None:
    """Device: CPU. lebm calls a reading untrained under 100 updates: a run of 100 updates, and a
    checkpoint of update 100 its validation chose, are trained; 99 is not."""
    base = {**ANOMALY, "method": "LatentEBM", "digit": 4, "chance": 0.34, "value": 0.4, "auroc": 0.7}
    chosen = {"split": "test, at the checkpoint of the highest validation AUPRC", "budget": "500 updates, batch 100"}
    (run,) = anomaly_rows_of([{**base, "updates": 100, "split": "test (the protocol)"}])
    assert run["updates"] == "100"
    (read,) = anomaly_rows_of([{**base, **chosen, "seed": 1, "validation_selected": {"update": 100}}])
    assert read["updates"] == "500; read at 100"
    (early,) = anomaly_rows_of([{**base, **chosen, "seed": 1, "validation_selected": {"update": 99}}])
    assert early["updates"] == "500; read at 99 (untrained: under 100)"


def test_seeds_of_two_held_out_digits_at_one_budget_make_a_row_each() -> None:
    """Device: CPU. Seeds 1 and 2 held out digit 1, seed 3 digit 4, all at 500 updates: two rows, each
    with its own digit's seeds and mean."""
    base = {**ANOMALY, "method": "LatentEBM", "chance": 0.34, "auroc": 0.7, "budget": "500 updates, batch 100"}
    rows = anomaly_rows_of(
        [
            {**base, "digit": 1, "seed": 1, "value": 0.2},
            {**base, "digit": 1, "seed": 2, "value": 0.3},
            {**base, "digit": 4, "seed": 3, "value": 0.6},
        ]
    )
    assert sorted((row["setting"], row["ours"].split(" (")[0]) for row in rows) == [
        ("held-out 1 (solved with no model), 2 seeds (1, 2)", "0.250 ± 0.071"),
        ("held-out 4, 1 seed (3)", "0.600"),
    ]


def test_a_figure_selected_otherwise_names_no_checkpoint_its_record_keeps_a_validation_choice_of() -> None:
    """Device: CPU. A record that keeps the validation's choice (update 350) beside a figure read as the
    mean of the last test readings: its updates cell gives the run's 500 updates alone, not a
    checkpoint the figure was not read at."""
    record = {
        **ANOMALY, "method": "LatentEBM", "digit": 4, "chance": 0.34, "value": 0.4, "auroc": 0.7, "n_evaluations": 3,
        "split": "test (the protocol)", "budget": "500 updates, batch 100", "validation_selected": {"update": 350},
    }  # fmt: skip
    (row,) = anomaly_rows_of([record])
    assert row["selection"] == "mean of the last 3 test readings (read on the test split, as the papers did)"
    assert row["updates"] == "500"


def test_every_generated_anomaly_table_has_its_columns_and_every_row_its_values() -> None:
    """Device: CPU. docs/results.md as generated from the stored records: every table of AUPRCs per
    held-out digit has the anomaly columns, and no row leaves its selection, updates or chance
    empty; held-out 1 rows say it is solved with no model."""
    text = (REPO / "docs" / "results.md").read_text().replace("\u00a0", " ")
    header = "| method | setting | ours | selection | updates | AUROC | chance | no model | paper |"
    tables = [part for part in text.split(header)[1:]]
    assert len(tables) >= 10, "the anomaly experiments' tables"
    for table in tables:
        rows = [line for line in table.strip().splitlines()[1:] if line.startswith("| ")]
        rows = rows[: next((i for i, row in enumerate(rows) if row.count("|") != header.count("|")), len(rows))]
        assert rows
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert cells[3] and cells[4] and cells[6], row  # selection, updates, chance (or "–" said)
            if "held-out 1" in cells[1]:
                assert "solved with no model" in cells[1], row


def git_in(repo: Path, *arguments: str) -> None:
    env = {"GIT_AUTHOR_DATE": "2026-11-20T10:00:00", "GIT_COMMITTER_DATE": "2026-11-20T10:00:00"}
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
        cwd=repo,
        check=True,
        capture_output=True,
        env={**__import__("os").environ, **env},
    )


def test_a_record_is_stale_when_its_recipe_changes_meaning_not_when_a_comment_does(tmp_path: Path) -> None:
    """A recipe's comment or paper line changed after a record leaves it fresh; a setting changed,
    in the recipe or a file it includes, makes it stale, named."""
    staleness = load_script("scripts/results_staleness.py")
    (tmp_path / "recipes" / "m").mkdir(parents=True)
    recipe, part = tmp_path / "recipes" / "m" / "r.yaml", tmp_path / "recipes" / "m" / "_part.yaml"
    recipe.write_text("include: [_part.yaml]\nlr: 0.1  # the paper's\npaper_targets: {a: 1}\n")
    part.write_text("steps: 60\n")
    git_in(tmp_path, "init", "-q")
    git_in(tmp_path, "add", ".")
    git_in(tmp_path, "commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    record = {"commit": commit, "date": "2026-11-20", "experiment": "e", "command": "lebm fit -c m/r"}
    row = {"recipes": ["m/r"], "ours": [{"where": {"experiment": "e"}}]}
    assert staleness.record_recipes(record) == ["m/r"]
    assert staleness.stale_reason(row, [record], tmp_path) is None
    recipe.write_text("include: [_part.yaml]\nlr: 0.1  # reworded\npaper_targets: {a: 2}\n")
    assert staleness.stale_reason(row, [record], tmp_path) is None
    part.write_text("steps: 30\n")
    assert "recipes/m/_part.yaml changed after the record of 2026-11-20" in staleness.stale_reason(
        row, [record], tmp_path
    )


def test_a_methods_module_is_stale_by_its_code_not_its_docstrings(tmp_path: Path) -> None:
    staleness = load_script("scripts/results_staleness.py")
    before = 'def f(x):\n    """Old words."""\n    return x + 1\n'
    assert staleness.meaning("m.py", before) == staleness.meaning("m.py", before.replace("Old words", "New words"))
    assert staleness.meaning("m.py", before) != staleness.meaning("m.py", before.replace("x + 1", "x + 2"))


@pytest.mark.slow
def test_every_stale_status_figure_says_so() -> None:
    """A status row whose records predate a change to their recipe or method carries ``stale``
    naming it, and a row that carries it is stale (scripts/results_staleness.py)."""
    staleness = load_script("scripts/results_staleness.py")
    if not staleness.history_is_whole():
        pytest.skip("needs the repository's whole git history")
    records = load_script("scripts/results_records.py").load_records(REPO / "docs" / "results")
    status = json.loads((REPO / "docs" / "results" / "status" / "status.json").read_text())
    for row in status["rows"]:
        reason = staleness.stale_reason(row, records)
        assert (reason is None) == ("stale" not in row), (row["recipes"][0], reason, row.get("stale"))


def gap_record(experiment: str, seed: int, val: float, test: float) -> dict:
    """A LatentEBM held-out-4 full-pool record with one reading at update 500."""
    reading = {"update": 500, "val": {"score": {"auprc": val}}, "test": {"score": {"auprc": test, "auroc": 0.7}}}
    return {"experiment": experiment, "method": "LatentEBM", "digit": 4, "pool": "full", "seed": seed,
            "readings": [reading]}  # fmt: skip


def test_the_gap_study_compares_each_factor_with_the_recipe_at_the_same_seed() -> None:
    """CPU. A factor run's change is its test AUPRC less the recipe's at the same seed, not the recipe's
    mean; the recipe's row shows its seeds' mean and sample sd; a factor nobody described is refused."""
    load_script("scripts/make_results_md.py")
    gap = load_script("scripts/results_gap.py")
    recipe = [gap_record("mnist_anomaly_selections", seed, 0.5, test) for seed, test in [(1, 0.45), (2, 0.50)]]
    factor = gap_record("mnist_anomaly_factor_ngf64", 1, 0.52, 0.49)
    lines = gap.gap_section([*recipe, factor])
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| ")}
    assert "| 1, 2 | 500 | 0.500 ± 0.000 | 0.475 ± 0.035 |" in rows["| the recipe (`ngf 32`)"]
    assert rows["| " + gap.FACTORS["ngf64"]].endswith("| 0.490 | 0.700 | +0.040 |")  # 0.49 - seed 1's 0.45
    with pytest.raises(SystemExit, match="nobody"):
        gap.gap_section([*recipe, gap_record("mnist_anomaly_factor_nobody", 1, 0.5, 0.5)])
    assert gap.gap_section(recipe) == []  # no factor yet: no section


def row_record(digit: int, seed: int, vals: list[float], tests: list[float], every: int = 100) -> dict:
    """A LatentEBM recipe record of held-out ``digit`` on the full pool: a reading every ``every``
    updates from ``every`` on, on both splits (``vals``, ``tests``), the ones before update 100 untrained."""
    readings = [
        {"update": every * (i + 1), "untrained": every * (i + 1) < 100,
         "val": {"score": {"auprc": v, "auroc": 0.6}},
         "test": {"n": 2000, "anomaly_rate": 0.34, "score": {"auprc": t, "auroc": 0.7}}}
        for i, (v, t) in enumerate(zip(vals, tests, strict=True))
    ]  # fmt: skip
    return {"experiment": "mnist_anomaly_selections", "method": "LatentEBM", "digit": digit, "pool": "full",
            "seed": seed, "protocol": "recipe", "metric": "auprc", "readings": readings, "updates": every * len(tests),
            "no_model": {"test": {"auprc": 0.3, "best": "background"}}}  # fmt: skip


def test_the_whole_row_reads_every_run_up_to_the_same_update_once_on_validation() -> None:
    """CPU. A digit's "ours" cell is the seeds' mean ± sd of the test AUPRC at each run's highest
    validation reading up to update 500 (a longer run's later readings and the untrained ones left
    out); the paper's selection averages the last 10 such test readings; a digit short of three
    seeds is named; two records of one seed are refused; with no record the section is absent."""
    load_script("scripts/make_results_md.py")
    row = load_script("scripts/results_row.py")
    published = [{"lebm_method": "LatentEBM", "experiment": "mnist_anomaly", "metric": "auprc", "digit": 4,
                  "value": 0.630, "std": 0.017}]  # fmt: skip
    vals = [0.1, 0.2, 0.9, 0.3, 0.4, 0.99]  # update 600's 0.99 lies past the budget: update 300 is chosen
    records = [
        row_record(4, seed, vals, [0.1, 0.2, chosen, 0.5, 0.6, 0.99]) for seed, chosen in [(1, 0.4), (2, 0.5), (3, 0.6)]
    ]
    # held-out 1 read every 50 updates: the reading at 50 is untrained, even with the best validation
    records.append(row_record(1, 1, [0.99] + [0.2] * 10, [0.0] + [0.3] * 10, every=50))
    lines = row.row_section(records, published)
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines if line.startswith("| ")}
    ours = next(v for k, v in cells.items() if k.startswith("**ours"))
    assert ours[:2] == ["0.300", "0.500 ± 0.100"]  # held-out 1 at update 100; held-out 4 at update 300
    papers_selection = next(v for k, v in cells.items() if k.startswith("ours with the paper's"))
    assert papers_selection[1] == "0.380 ± 0.020"  # the 5 trained readings up to 500: 0.1, 0.2, chosen, 0.5, 0.6
    assert papers_selection[0] == "0.300"  # updates 100-500, the untrained 50 left out
    assert next(v for k, v in cells.items() if k == "ours less the paper")[1] == "-0.130"
    assert "Held-out 1, 5, 7, 9 have fewer than 3 seeds" in "\n".join(lines)
    # held-out 1 reads 0.3 at chance 0.34 against a no-model 0.3; held-out 4 reads 0.5, above both
    assert "Held-out 1 reads below chance (0.300 against 0.340)" in lines[2] and "Held-out 4 reads" not in lines[2]
    above_chance_only = row_record(5, 1, vals, [0.4] * 6)  # 0.4: above chance 0.34, below a no-model 0.45
    above_chance_only["no_model"] = {"test": {"auprc": 0.45, "best": "background"}}
    said = row.row_section([above_chance_only], published)[2]
    assert "Held-out 5 reads above chance but no higher than a score with no model (0.400 against 0.450)" in said
    with pytest.raises(SystemExit, match="two recipe records of seed"):
        row.row_section([*records, records[0]], published)
    assert row.row_section([], published) == []


def test_the_row_says_whether_a_factor_beats_the_recipe_only_when_two_seeds_show_it() -> None:
    """CPU. No factor read: untested. A factor above the recipe's validation seed sd on one seed:
    undecided. The same on two seeds: the row is not at the best validated setting. Below it: the
    recipe is the best validated setting."""
    load_script("scripts/make_results_md.py")
    row = load_script("scripts/results_row.py")
    recipe = [gap_record("mnist_anomaly_selections", seed, val, 0.5) for seed, val in [(1, 0.49), (2, 0.51)]]
    assert "No one-factor change has been read" in row.setting_sentence(recipe)
    one = gap_record("mnist_anomaly_factor_lr2x", 1, 0.53, 0.5)  # +0.04 over a seed sd of 0.014
    assert "read on one seed, which cannot tell it from seed noise" in row.setting_sentence([*recipe, one])
    two = gap_record("mnist_anomaly_factor_lr2x", 2, 0.55, 0.5)
    assert "not yet at the best validated setting" in row.setting_sentence([*recipe, one, two])
    lower = [gap_record("mnist_anomaly_factor_lr2x", seed, 0.495, 0.5) for seed in (1, 2)]
    assert "The recipe is the best validated setting" in row.setting_sentence([*recipe, *lower])
    assert "one seed on validation" in row.setting_sentence([recipe[0], one])


def plateau_record(seed: int, weight: float, value: float, split: str, digit: int = 4) -> dict:
    """A score-variant record of ``experiments/anomaly_gap.py`` at a longer run's 16,000-update checkpoint."""
    on = ", 2000 val images, the validation split" if split == "val" else ", 2000 test images"
    return {"experiment": "mnist_anomaly_gap", "method": "LatentEBM", "digit": digit, "metric": "auprc",
            "run_setting": f"70k pool, 16,000 updates (GPU), seed {seed}{on}", "prior_weight": weight,
            "split": "validation (where a score is chosen)" if split == "val" else "test (the protocol)",
            "budget": "no training: step=16000.ckpt of runs/x (16,000 updates)",
            "posterior": "langevin 20 steps from noise (the model's)", "value": value, "auroc": 0.8}  # fmt: skip


def test_the_score_weight_is_chosen_on_validation_and_read_on_test_against_weight_one() -> None:
    """CPU. The weight with the highest mean validation AUPRC, among those read on every seed, is the
    one read, even where another reads higher on test; its change is the test AUPRC less weight 1's
    at the same seeds; another digit's readings are not mixed in; a choice of weight 1 itself, or no
    test reading yet, gives no row."""
    load_script("scripts/make_results_md.py")
    gap = load_script("scripts/results_gap.py")
    val = [plateau_record(s, w, v, "val") for s in (1, 2) for w, v in [(1.0, 0.57), (4.0, 0.58), (8.0, 0.55)]]
    val.append(plateau_record(1, 2.0, 0.99, "val"))  # read on seed 1 only: not a candidate
    test = [
        plateau_record(s, w, v + s / 100, "test") for s in (1, 2) for w, v in [(1.0, 0.56), (4.0, 0.57), (8.0, 0.9)]
    ]
    other_digit = plateau_record(1, 4.0, 0.1, "test", digit=9)
    row = gap.score_weight_row([*val, *test, other_digit])
    assert row.startswith("| the score's prior term weighted 4 instead of 1 (chosen on validation among 1, 4, 8)")
    assert "| 1, 2 | 16,000 | 0.580 ± 0.000 | 0.585 ± 0.007 | 0.800 ± 0.000 | +0.010 (vs weight 1" in row
    assert gap.score_weight_row(val) is None  # the test split not read yet
    flat = [plateau_record(s, w, 0.6 if w == 1.0 else 0.5, "val") for s in (1, 2) for w in (1.0, 4.0)]
    assert gap.score_weight_row([*flat, *test]) is None  # the recipe's own weight chosen: nothing changes


def test_a_section_comparing_methods_names_each_ones_size_at_the_recipe_its_records_ran() -> None:
    """CPU. Two methods side by side: each named with its parameter count at the recipe its command
    names (``-c recipes/...``, or a run folder of an experiment runner, mapped to the recipe it
    trains); a method whose recipe was not sized says so; a section of one method (beside a baseline
    with no model) gets no line."""
    load_script("scripts/make_results_md.py")
    sizes_module = load_script("scripts/results_sizes.py")
    sizes = {
        "latent_ebm/mnist_anomaly_offline": {"method": "LatentEBM", "parameters": 820_090},
        "hierarchical/mnist_anomaly_offline": {"method": "JointHierarchicalEBM", "parameters": 24_859_682},
    }
    latent = {"method": "LatentEBM", "command": "lebm fit -c recipes/latent_ebm/mnist_anomaly_offline.yaml"}
    run = "runs/hierarchical/mnist_anomaly_selections/digit4-seed1"  # an experiment runner's folder
    joint = {"method": "JointHierarchicalEBM", "command": f"python experiments/anomaly_protocols.py {run}"}
    line = sizes_module.sizes_line([latent, joint], sizes)[0]
    assert "LatentEBM 0.82M (`latent_ebm/mnist_anomaly_offline`)" in line
    assert "JointHierarchicalEBM 24.9M (`hierarchical/mnist_anomaly_offline`)" in line
    sizes["damc/mnist_anomaly_offline"] = {"method": "DAMC", "parameters": 3_164_314}
    unsized = {"method": "DAMC", "command": "lebm fit -c recipes/damc/mnist_anomaly.yaml"}  # not the sized recipe
    assert "DAMC size not recorded" in sizes_module.sizes_line([latent, unsized], sizes)[0]
    assert sizes_module.sizes_line([latent, {"method": "no model", "command": ""}], sizes) == []  # no method
    assert sizes_module.sizes_line([latent, {**latent, "method": "LatentEBM, Gaussian prior"}], sizes) == []


@pytest.mark.slow
def test_the_recorded_recipe_sizes_are_what_the_recipes_build() -> None:
    """CPU, slow (builds ten recipes). ``docs/results/status/sizes.json`` holds each sized recipe's
    parameter count as the recipe builds it now: a recipe change that resizes a method fails here
    until ``python scripts/recipe_sizes.py`` is run again."""
    data = os.environ.get("LEBM_DATA")
    if not data or not (Path(data) / "mnist").is_dir():
        pytest.skip("needs LEBM_DATA with mnist/ (the MNIST recipes build their DataModule)")
    sizes = load_script("scripts/recipe_sizes.py")
    assert sizes.sizes(Path(data)) == json.loads(sizes.SIZES.read_text())
