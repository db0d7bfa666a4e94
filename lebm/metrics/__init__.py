"""Evaluation metrics that do not depend on Lightning (the callbacks wrap them): FID/KID, the
per-layer latent probe, language-model perplexity (the text metrics FPPL/RPPL), the
importance-sampled marginal likelihood and the mixing of chains (split R-hat, bulk ESS:
``mixing``); the ranking metrics of anomaly scores and the rank-independent split of FID's
reference and generated images (``references``)."""

from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FIDMetrics,
    InceptionFeatures,
    MetricFeatures,
    ReferenceState,
    SmallConvFeatures,
    extractor_fingerprint,
    load_reference_state,
    save_reference_state,
    to_three_channels,
    to_uint8,
)
from lebm.metrics.language_model import (
    LANGUAGE_MODEL_DEFAULTS,
    canonical_sentences,
    nll_totals,
    perplexity,
    perplexity_from_totals,
    sentence_nll,
    train_language_model,
)
from lebm.metrics.likelihood import Estimate, importance_sampled_log_likelihood, prior_log_normalizer
from lebm.metrics.mixing import bulk_ess, split_rhat
from lebm.metrics.probe import LayerProbe, collect_latents, fit_probe, layer_names, probe_collected, probe_layers
from lebm.metrics.ranking import ranking_metrics, trapezoid_auprc
from lebm.metrics.references import batch_seed, rank_batches, rank_share, reference_batches, reference_indices

__all__ = [
    "LANGUAGE_MODEL_DEFAULTS",
    "OFFLINE_INCEPTION_WEIGHTS",
    "FIDMetrics",
    "InceptionFeatures",
    "LayerProbe",
    "MetricFeatures",
    "ReferenceState",
    "SmallConvFeatures",
    "Estimate",
    "canonical_sentences",
    "batch_seed",
    "bulk_ess",
    "collect_latents",
    "extractor_fingerprint",
    "fit_probe",
    "importance_sampled_log_likelihood",
    "layer_names",
    "load_reference_state",
    "nll_totals",
    "perplexity",
    "perplexity_from_totals",
    "probe_collected",
    "prior_log_normalizer",
    "probe_layers",
    "rank_batches",
    "rank_share",
    "ranking_metrics",
    "trapezoid_auprc",
    "reference_batches",
    "reference_indices",
    "save_reference_state",
    "sentence_nll",
    "split_rhat",
    "to_three_channels",
    "to_uint8",
    "train_language_model",
]
