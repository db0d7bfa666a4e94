"""Evaluation metrics that do not depend on Lightning (the callbacks wrap them)."""

from lebm.metrics.fid import (
    OFFLINE_INCEPTION_WEIGHTS,
    FeatureStats,
    InceptionFeatures,
    ReferenceStats,
    SmallConvFeatures,
    extractor_fingerprint,
    frechet_distance,
    kernel_inception_distance,
    load_reference_stats,
    mmd2_unbiased,
    save_reference_stats,
    to_three_channels,
    to_uint8,
)

__all__ = [
    "OFFLINE_INCEPTION_WEIGHTS",
    "FeatureStats",
    "InceptionFeatures",
    "ReferenceStats",
    "SmallConvFeatures",
    "extractor_fingerprint",
    "frechet_distance",
    "kernel_inception_distance",
    "load_reference_stats",
    "mmd2_unbiased",
    "save_reference_stats",
    "to_three_channels",
    "to_uint8",
]
