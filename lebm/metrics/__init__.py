"""Evaluation metrics that do not depend on Lightning (the callbacks wrap them)."""

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

__all__ = [
    "OFFLINE_INCEPTION_WEIGHTS",
    "FIDMetrics",
    "InceptionFeatures",
    "MetricFeatures",
    "ReferenceState",
    "SmallConvFeatures",
    "extractor_fingerprint",
    "load_reference_state",
    "save_reference_state",
    "to_three_channels",
    "to_uint8",
]
