"""Evaluation metrics that do not depend on Lightning (the callbacks wrap them): FID/KID, the
per-layer latent probe, language-model perplexity (the text metrics FPPL/RPPL) and the
importance-sampled marginal likelihood."""

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
from lebm.metrics.probe import LayerProbe, collect_latents, fit_probe, layer_names, probe_collected, probe_layers

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
    "save_reference_state",
    "sentence_nll",
    "to_three_channels",
    "to_uint8",
    "train_language_model",
]
