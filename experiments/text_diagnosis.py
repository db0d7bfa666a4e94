"""Why the text quickstart's reconstructions miss their input's words: measurements of the trained models.

    python experiments/text_diagnosis.py [--runs runs/text_diagnosis] [--epochs 20] [--only SETTING ..]
                                         [--record]

Trains the text quickstart (``recipes/latent_ebm/text_quickstart.yaml``: LatentEBM, LSTM decoder,
the embedded template grammar, 20 epochs) once per training setting of :data:`SETTINGS`, each with
``lebm fit`` into ``--runs/<setting>`` unless its last checkpoint is there, and measures each
trained model on the held-out grammar sentences (the datamodule's validation and test splits,
400 sentences):

- ``token_accuracy_posterior`` / ``token_accuracy_prior``: teacher-forced token accuracy of the
  held-out sentences with ``z`` from the posterior chain (``infer``) against ``z`` drawn from the
  prior (equal: the decoder ignores ``z``); ``nll_posterior`` / ``nll_prior``: ``-log p(x|z)`` there;
- ``reconstruction_accuracy``: token accuracy of the greedy reconstructions (posterior chain, then
  argmax decoding), position by position over the words and ``<eos>``; ``exact_reconstructions``;
  ``*_sampled``: the same with the words drawn from ``p(x|z)`` (the recipe's decoding);
- ``template_agreement``: share of reconstructions with the sentence's template (the most frequent
  template's share, 0.4, is what a decoder that ignores ``z`` scores); ``word_accuracy``: share of
  the class words reconstructed right where the template was kept (chance: about 0.2);
- ``energy_steps``: the posterior chain's mean energy ``-log p(x, z)`` along its steps (every
  ``K/10``-th); ``rhat_energy`` / ``rhat_coordinates``: split R-hat (``lebm.metrics.mixing``) of 8
  chains per sentence over the chain's second half, the largest over 16 sentences;
- ``active_units``: latent coordinates whose ``E[z|x]`` varies over ``x`` by more than 0.01
  (Burda et al. 2016, arXiv 1509.00519, Sec. 5.2), ``E[z|x]`` from 8 chains per sentence less the
  Monte-Carlo error of that mean (else 8 chains of a collapsed posterior read as active);
- ``mutual_information``: ``I(x; z)`` in nats under the inferred posterior (the estimator of He et
  al. 2019, arXiv 1901.05534: a Gaussian fitted to each sentence's 8 draws, ``E log q(z|x) - E log
  q(z)``, ``q(z)`` their mixture); ``mutual_information_null``: the same estimator on prior draws,
  where the true value is 0 (its bias: read the difference);
- ``latent_variance_between_templates`` / ``_within_templates``: ``Var_x(E[z|x])`` split into its
  part between the templates and within them (near 0: the words do not move the posterior);
- per model: ``nll_marginal``, the held-out ``-log p(x)`` (importance sampled) beside
  ``nll_grammar``, the grammar's own (the best any model can score); the template-only accuracy
  ceiling; and 400 prior samples decoded greedily and sampled (``distinct_samples_*`` among the
  first 40, ``grammatical_*``, ``template_distance_*``).

The ``recipe`` setting is also measured with a 5x longer posterior chain, twice its step size, and
gradient descent on ``-log p(x, z)`` (the best ``z`` the decoder offers). ``--record`` writes
``docs/results/latent_ebm_text_diagnosis.json`` and regenerates ``docs/results.md``. The JSON
printed at the end holds every number; ``docs/text.md`` reads them.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from records import EPOCH_LINES, newest_last_checkpoint, render_results_md, stamped, this_device, with_progress  # noqa: E402
from script import positive_int, run_lebm, run_main  # noqa: E402

import lebm  # noqa: E402
from lebm.config import build  # noqa: E402
from lebm.data import TemplateGrammar  # noqa: E402
from lebm.metrics.likelihood import importance_sampled_log_likelihood, prior_log_normalizer  # noqa: E402
from lebm.metrics.mixing import split_rhat  # noqa: E402
from lebm.samplers import Langevin  # noqa: E402

RECIPE = "recipes/latent_ebm/text_quickstart.yaml"
OUTPUT = REPO / "docs" / "results" / "latent_ebm_text_diagnosis.json"
MODEL = "--model.init_args."
NET = MODEL + "decoder.init_args.net.init_args."
CHAIN = MODEL + "posterior_sampler.init_args."
#: The Gaussian prior N(0, I) in place of the EBM (the alternating back-propagation baseline).
GAUSSIAN_PRIOR = {
    "model": {"init_args": {"prior": {"class_path": "lebm.models.GaussianPrior", "init_args": {"latent_dim": 4}}}}
}

#: Training settings: ``lebm fit`` options added to the quickstart recipe (``{run}``: the run folder).
SETTINGS: dict[str, list[str]] = {
    "recipe": [],
    "posterior chain 60 steps": [CHAIN + "n_steps", "60"],
    "posterior step size 0.6": [CHAIN + "step_size", "0.6"],
    "latent size 32": [MODEL + "prior.init_args.latent_dim", "32"],
    "word dropout 0": [NET + "word_dropout", "0.0"],
    "word dropout 0.9": [NET + "word_dropout", "0.9"],
    "no word inputs": [NET + "word_inputs", "false"],
    "Gaussian prior": ["-c", "{run}/gaussian_prior.yaml"],
    "100 epochs": ["--trainer.max_epochs", "100", "--trainer.check_val_every_n_epoch", "50"],
}
CHAINS_PER_SENTENCE = 8
RHAT_SENTENCES = 16
SAMPLES = 40
#: The metrics kept as records (the printed JSON has them all).
RECORDED = (
    "token_accuracy_posterior",
    "token_accuracy_prior",
    "reconstruction_accuracy",
    "template_agreement",
    "word_accuracy",
    "reconstruction_accuracy_sampled",
    "template_agreement_sampled",
    "nll_marginal",
    "distinct_samples_greedy",
    "distinct_samples_sample",
)


# ------------------------------------------------------------------------------------- training
def train(run: Path, options: list[str], epochs: int) -> Path:
    """The run's last checkpoint, training the quickstart with ``options`` into ``run`` first if it has none."""
    if not list((run / "checkpoints").glob("last*.ckpt")):
        run.mkdir(parents=True, exist_ok=True)
        (run / "gaussian_prior.yaml").write_text(yaml.safe_dump(GAUSSIAN_PRIOR))
        command = ["lebm", "fit", "-c", RECIPE, "--trainer.default_root_dir", str(run), "--trainer.logger", "false"]
        command += ["--trainer.max_epochs", str(epochs), *(option.format(run=run) for option in options)]
        print("+", shlex.join(command), flush=True)
        run_lebm([*command, *EPOCH_LINES])
    return newest_last_checkpoint(run)


def held_out_sentences(run: Path) -> list[str]:
    """The validation and test sentences of the run's datamodule (its config and seed)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    L.seed_everything(config.get("seed_everything") or 0, verbose=False)
    data = build(config["data"])
    data.setup("fit")
    return [" ".join(words) for words in data.val_sentences + data.test_sentences]


# ------------------------------------------------------------------------------ measurements
def teacher_forced(model: Any, x: Tensor, z: Tensor) -> dict[str, float]:
    """Mean teacher-forced token accuracy and ``-log p(x|z)`` of sentences ``x`` at latents ``z``."""
    with torch.no_grad():
        accuracy = model.decoder.metrics(x, z)["token_accuracy"].mean()
        nll = model.decoder.nll(x, z).mean()
    return {"token_accuracy": float(accuracy), "nll": float(nll)}


def reconstruction_accuracy(model: Any, x: Tensor, decoded: Tensor) -> dict[str, float]:
    """Token accuracy of the decoded reconstructions ``decoded`` against ``x`` (both ``(B, T)``
    token ids), position by position over each sentence's words and ``<eos>``, and the share of
    exact reconstructions."""
    target = x[:, 1:]
    length = max(target.shape[1], decoded.shape[1] - 1)
    pad = model.decoder.pad_id
    target = torch.nn.functional.pad(target, (0, length - target.shape[1]), value=pad)
    guess = torch.nn.functional.pad(decoded[:, 1:], (0, length - decoded.shape[1] + 1), value=pad)
    real = target != pad
    hits = ((guess == target) & real).sum(1).float() / real.sum(1)
    exact = (guess == target).all(1).float()
    return {"reconstruction_accuracy": float(hits.mean()), "exact_reconstructions": float(exact.mean())}


def energy_traces(model: Any, x: Tensor, z: Tensor, chain: Langevin, seed: int) -> tuple[Tensor, Tensor]:
    """Run ``chain``'s steps one at a time from ``z`` ``(B, D)`` on the posteriors of ``x``; returns
    the per-chain energies ``-log p(x, z)`` ``(B, K + 1)`` and the states ``(B, K + 1, D)``."""
    generator = torch.Generator().manual_seed(seed)
    one_step = Langevin(1, chain.step_size, noise_std=chain.noise_std)
    energies, states = [], []
    for index in range(chain.n_steps + 1):
        if index:
            z = one_step(
                model.posterior_chain_energy,
                z,
                inputs=(x,),
                reference_precision=model.prior.reference_precision,
                freeze=[model.decoder, model.prior],
                generator=generator,
            )
        with torch.no_grad():
            energies.append(model.joint_energy(x, z))
        states.append(z)
    return torch.stack(energies, 1), torch.stack(states, 1)


def chain_mixing(model: Any, x: Tensor, chain: Langevin, seed: int) -> dict[str, Any]:
    """The posterior chain's mean energy along its steps and the split R-hat of its second half
    over ``CHAINS_PER_SENTENCE`` chains from independent starts (largest over the sentences)."""
    count, chains = min(RHAT_SENTENCES, len(x)), CHAINS_PER_SENTENCE
    repeated = x[:count].repeat_interleave(chains, 0)
    start = torch.randn(len(repeated), model.prior.latent_dim, generator=torch.Generator().manual_seed(seed))
    energies, states = energy_traces(model, repeated, start, chain, seed)
    every = max(1, chain.n_steps // 10)
    half = energies[:, chain.n_steps // 2 + 1 :]
    rhat_energy = max(split_rhat(half.view(count, chains, -1)[i]) for i in range(count))
    coordinates = states[:, chain.n_steps // 2 + 1 :].view(count, chains, half.shape[1], -1)
    rhat_coordinates = max(
        split_rhat(coordinates[i, :, :, d]) for i in range(count) for d in range(coordinates.shape[-1])
    )
    return {
        "energy_steps": [round(float(e), 3) for e in energies.mean(0)[::every]],
        "rhat_energy": rhat_energy,
        "rhat_coordinates": rhat_coordinates,
    }


def posterior_draws(model: Any, x: Tensor, chain: Langevin, seed: int) -> Tensor:
    """``CHAINS_PER_SENTENCE`` independent posterior-chain draws per sentence: ``(B, chains, D)``."""
    generator = torch.Generator().manual_seed(seed)
    draws = [model.infer(x, sampler=chain, generator=generator) for _ in range(CHAINS_PER_SENTENCE)]
    return torch.stack(draws, 1)


def active_units(draws: Tensor, threshold: float = 0.01) -> int:
    """Coordinates whose posterior mean varies over the sentences by more than ``threshold``:
    ``Var_x(mean of K draws) - E_x[Var(draws)] / K`` estimates ``Var_x(E[z|x])`` without the
    Monte-Carlo error of the K-draw mean."""
    chains = draws.shape[1]
    between = draws.mean(1).var(0)
    within = draws.var(1).mean(0) / chains
    return int(((between - within) > threshold).sum())


def mutual_information(draws: Tensor, seed: int) -> float:
    """``I(x; z) = E_x E_q(z|x) [log q(z|x) - log q(z)]`` in nats with ``q(z|x)`` a diagonal Gaussian
    fitted to each sentence's draws ``(B, K, D)`` and ``q(z)`` the mixture of the ``B`` Gaussians
    (He et al. 2019, arXiv 1901.05534); one draw from each ``q(z|x)``."""
    mean, var = draws.mean(1).double(), draws.var(1).double().clamp(min=1e-6)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = mean + var.sqrt() * noise

    def log_normal(points: Tensor, mu: Tensor, variance: Tensor) -> Tensor:
        return -0.5 * (((points - mu) ** 2) / variance + variance.log() + math.log(2 * math.pi)).sum(-1)

    own = log_normal(z, mean, var)
    pairs = log_normal(z[:, None], mean[None], var[None])  # (B, B): z_i under q(z|x_j)
    aggregate = torch.logsumexp(pairs, 1) - math.log(len(z))
    return float((own - aggregate).mean())


def template_ceiling(grammar: TemplateGrammar) -> float:
    """The token accuracy (words and ``<eos>``) of a decoder that knows each sentence's template and
    nothing else: literals and ``<eos>`` right, a class word right with probability ``1 / |class|``."""
    expected = 0.0
    for template, weight in zip(grammar.templates, grammar.template_weights.tolist(), strict=True):
        hits = sum(
            1.0 if slot not in grammar.word_classes else 1 / len(grammar.word_classes[slot]) for slot in template
        )
        expected += weight * (hits + 1) / (len(template) + 1)
    return expected


def template_entropy(grammar: TemplateGrammar) -> dict[str, float]:
    """``H(template)`` and ``H(x)`` of the grammar in nats (class words are uniform and independent)."""
    weights = grammar.template_weights.tolist()
    h_template = -sum(w * math.log(w) for w in weights)
    h_words = sum(
        w * sum(math.log(len(grammar.word_classes[slot])) for slot in t if slot in grammar.word_classes)
        for w, t in zip(weights, grammar.templates, strict=True)
    )
    return {"entropy_template": h_template, "entropy_sentence": h_template + h_words}


def template_measures(grammar: TemplateGrammar, sentences: list[str], rebuilt: list[str]) -> dict[str, float]:
    """``template_agreement``: share of reconstructions with the sentence's template;
    ``word_accuracy``: share of class words reconstructed right where the template was kept
    (chance: about 0.2)."""
    kept, words, hits = 0, 0, 0
    for sentence, guess in zip(sentences, rebuilt, strict=True):
        template = grammar.template_of(sentence)
        if template is None or grammar.template_of(guess) != template:
            continue
        kept += 1
        for slot, a, b in zip(grammar.templates[template], sentence.split(), guess.split(), strict=True):
            if slot in grammar.word_classes:
                words, hits = words + 1, hits + (a == b)
    return {"template_agreement": kept / len(sentences), "word_accuracy": hits / max(words, 1)}


def template_variances(grammar: TemplateGrammar, sentences: list[str], draws: Tensor) -> dict[str, float]:
    """``Var_x(E[z|x])`` summed over the coordinates and split into its part between the templates
    and its part within them (sentences of one template, different words), each less the
    Monte-Carlo error of the ``K``-draw means (as in :func:`active_units`). A within-template part
    near 0 (or below, by chance): the posterior depends on the sentence only through its template."""
    means = draws.mean(1)
    noise = float((draws.var(1).mean(0) / draws.shape[1]).sum())
    labels = torch.tensor([grammar.template_of(s) for s in sentences])
    total = float(means.var(0, unbiased=False).sum())
    within = sum(
        int((labels == k).sum()) * float(means[labels == k].var(0, unbiased=False).sum())
        for k in labels.unique().tolist()
    ) / len(labels)
    return {"latent_variance_between_templates": total - within, "latent_variance_within_templates": within - noise}


def sample_measures(model: Any, seed: int, decoding: str, n: int = 400) -> dict[str, float]:
    """Samples of the prior decoded with ``decoding`` (``greedy``: argmax words, the mode of
    ``p(x|z)``; ``sample``: words drawn from ``p(x|z)``, an ancestral sample of the model):
    ``distinct_samples`` among the first ``SAMPLES``, and over ``n``, the ``grammatical`` share and
    the total-variation distance of their templates from the grammar's weights (ungrammatical
    samples a class of their own)."""
    grammar = TemplateGrammar()
    model.decoder.decoding, saved = decoding, model.decoder.decoding
    try:
        samples = model.generate(n, generator=torch.Generator().manual_seed(seed))
    finally:
        model.decoder.decoding = saved
    counts = collections.Counter(grammar.template_of(sample) for sample in samples)
    shares = torch.tensor([counts[k] / n for k in range(len(grammar.templates))], dtype=torch.float64)
    grammatical = float(shares.sum())
    distance = 0.5 * float((shares - grammar.template_weights).abs().sum()) + 0.5 * (1 - grammatical)
    return {
        f"distinct_samples_{decoding}": len(set(samples[:SAMPLES])),
        f"grammatical_{decoding}": grammatical,
        f"template_distance_{decoding}": distance,
    }


def true_nll(grammar: TemplateGrammar, sentences: list[str]) -> float:
    """The grammar's own mean ``-log p(x)`` of ``sentences`` in nats: the best any model can score."""
    weights = grammar.template_weights.tolist()
    total = 0.0
    for sentence in sentences:
        template = grammar.templates[grammar.template_of(sentence)]
        words = sum(math.log(len(grammar.word_classes[slot])) for slot in template if slot in grammar.word_classes)
        total += words - math.log(weights[grammar.templates.index(template)])
    return total / len(sentences)


def model_measures(model: Any, sentences: list[str], seed: int = 0) -> dict[str, float]:
    """The model's held-out ``-log p(x)`` (importance sampled, ``lebm.metrics.likelihood``) beside the
    grammar's own, the grammar's entropies, the template-only accuracy ceiling and its samples
    (:func:`sample_measures`, greedy and sampled decoding)."""
    grammar = TemplateGrammar()
    x = model.decoder.prepare(sentences, torch.device("cpu"))
    normaliser = prior_log_normalizer(model.prior, generator=torch.Generator().manual_seed(seed))
    estimate = importance_sampled_log_likelihood(model, x, normaliser, generator=torch.Generator().manual_seed(seed))
    results = {
        "nll_marginal": float(-estimate.value.mean()),
        "nll_marginal_std_error": float(estimate.std_error.mean()),
        "nll_grammar": true_nll(grammar, sentences),
        **template_entropy(grammar),
        "template_only_accuracy": template_ceiling(grammar),
        **sample_measures(model, seed + 1, "greedy"),
        **sample_measures(model, seed + 1, "sample"),
    }
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in results.items()}


def suffixed(values: dict[str, Any], suffix: str) -> dict[str, Any]:
    """``values`` with ``suffix`` added to each name."""
    return {name + suffix: value for name, value in values.items()}


def measure(model: Any, sentences: list[str], chain: Langevin, seed: int = 0) -> dict[str, Any]:
    """Every per-chain measurement of the module docstring for one model and one posterior chain
    (a chain without noise, gradient descent, gives no posterior draws: no draw-based measures)."""
    grammar = TemplateGrammar()
    model.posterior_sampler, saved = chain, model.posterior_sampler
    try:
        x = model.decoder.prepare(sentences, torch.device("cpu"))
        generator = torch.Generator().manual_seed(seed)
        z_posterior = model.infer(x, generator=generator)
        z_prior = model.prior.sample(len(x), generator=generator)
        posterior, prior = teacher_forced(model, x, z_posterior), teacher_forced(model, x, z_prior)
        with torch.no_grad():
            greedy = model.decoder.decode(z_posterior, strategy="greedy")
            sampled = model.decoder.decode(z_posterior, strategy="sample", generator=generator)
        results = {
            "token_accuracy_posterior": posterior["token_accuracy"],
            "token_accuracy_prior": prior["token_accuracy"],
            "nll_posterior": posterior["nll"],
            "nll_prior": prior["nll"],
            **reconstruction_accuracy(model, x, greedy),
            **template_measures(grammar, sentences, model.decoder.present(greedy)),
            **suffixed(reconstruction_accuracy(model, x, sampled), "_sampled"),
            **suffixed(template_measures(grammar, sentences, model.decoder.present(sampled)), "_sampled"),
            **chain_mixing(model, x, chain, seed + 3),
        }
        if chain.noise > 0:
            results.update(draw_measures(model, x, grammar, sentences, chain, seed))
    finally:
        model.posterior_sampler = saved
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in results.items()}


def draw_measures(
    model: Any, x: Tensor, grammar: TemplateGrammar, sentences: list[str], chain: Langevin, seed: int
) -> dict[str, float]:
    """Active units, the mutual information (and its null) and the latent variance between and within
    templates, from ``CHAINS_PER_SENTENCE`` posterior draws per sentence."""
    draws = posterior_draws(model, x, chain, seed + 1)
    generator = torch.Generator().manual_seed(seed + 5)
    null = model.prior.sample(draws.shape[0] * draws.shape[1], generator=generator).view_as(draws)
    return {
        "active_units": active_units(draws),
        "mutual_information": mutual_information(draws, seed + 2),
        "mutual_information_null": mutual_information(null, seed + 2),
        **template_variances(grammar, sentences, draws),
    }


def chain_variants(model: Any) -> dict[str, Langevin]:
    """The model's own posterior chain, a 5x longer one, one with twice the step size, and gradient
    descent on ``-log p(x, z)`` (no noise, 200 steps): the best ``z`` the decoder offers."""
    own = model.posterior_sampler
    return {
        "training chain": own,
        "posterior chain 100 steps": Langevin(100, own.step_size),
        "step size x2": Langevin(own.n_steps, 2 * own.step_size),
        "gradient descent 200 steps": Langevin(200, own.step_size, noise_std=0.0),
    }


def examples(model: Any, sentences: list[str], seed: int = 0) -> dict[str, Any]:
    """The README's calls with the recipe's decoding (``generate(3)``, ``reconstruct(["the cat
    sees"])``), greedy reconstructions of a few held-out sentences, and the most common of
    ``SAMPLES`` samples."""
    generator = torch.Generator().manual_seed(seed)
    samples = model.generate(SAMPLES, generator=generator)
    z = model.infer(sentences[:6], generator=generator)
    with torch.no_grad():
        rebuilt = model.decoder.present(model.decoder.decode(z, strategy="greedy"))
    return {
        "decoding": model.decoder.decoding,
        "generate(3)": model.generate(3, generator=generator),
        "reconstruct(['the cat sees'])": model.reconstruct(["the cat sees"], generator=generator),
        "greedy reconstructions": dict(zip(sentences[:6], rebuilt, strict=True)),
        "most common samples": collections.Counter(samples).most_common(5),
    }


def diagnose(name: str, options: list[str], runs: Path, epochs: int) -> dict[str, Any]:
    """Train (unless done) and measure one training setting."""
    run = runs / name.replace(" ", "_")
    model = lebm.load(train(run, options, epochs), map_location="cpu").eval()
    sentences = held_out_sentences(run)
    chains = chain_variants(model) if name == "recipe" else {"training chain": model.posterior_sampler}
    return {
        "options": options,
        "model": model_measures(model, sentences),
        "chains": {chain: measure(model, sentences, sampler) for chain, sampler in chains.items()},
        "examples": examples(model, sentences),
    }


# ----------------------------------------------------------------------------------- records
def to_records(results: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    """The :data:`RECORDED` metrics of each training setting and posterior chain, as result records."""
    records = []
    for setting, result in results.items():
        for chain, values in result["chains"].items():
            for metric, value in {**values, **result["model"]}.items():
                if metric not in RECORDED or (chain != "training chain" and metric in result["model"]):
                    continue
                label = setting if chain == "training chain" else f"{setting}, evaluated with {chain}"
                records.append(
                    {
                        "method": "LatentEBM",
                        "experiment": "text_diagnosis",
                        "setting": label,
                        "metric": metric,
                        "value": value,
                        "budget": f"text quickstart, {epochs} epochs unless the setting says, 400 held-out sentences",
                        "command": f"python experiments/text_diagnosis.py --epochs {epochs} --record",
                        "device": this_device(),
                        "date": datetime.date.today().isoformat(),
                    }
                )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/text_diagnosis")
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--only", nargs="*", default=None, choices=list(SETTINGS), help="settings (default: all)")
    parser.add_argument("--record", action="store_true", help=f"write {OUTPUT.relative_to(REPO)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name in with_progress(args.only or list(SETTINGS), "training setting"):
        results[name] = diagnose(name, SETTINGS[name], REPO / args.runs, args.epochs)
        print(name, json.dumps(results[name]), flush=True)
    if args.record:
        OUTPUT.write_text(json.dumps([stamped(r) for r in to_records(results, args.epochs)], indent=1) + "\n")
        render_results_md()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    run_main(main)
