"""Evaluation metrics that do not depend on Lightning (the callbacks wrap them): FID/KID and the
per-layer latent probe."""

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
from lebm.metrics.probe import LayerProbe, collect_latents, fit_probe, layer_names, probe_collected, probe_layers

__all__ = [
    "OFFLINE_INCEPTION_WEIGHTS",
    "FIDMetrics",
    "InceptionFeatures",
    "LayerProbe",
    "MetricFeatures",
    "ReferenceState",
    "SmallConvFeatures",
    "collect_latents",
    "extractor_fingerprint",
    "fit_probe",
    "layer_names",
    "load_reference_state",
    "probe_collected",
    "probe_layers",
    "save_reference_state",
    "to_three_channels",
    "to_uint8",
]
