"""lebm: a PyTorch Lightning toolkit for latent-space energy-based models."""

__version__ = "0.1.0"
