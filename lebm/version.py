"""The version of lebm (read by setup.cfg, ``lebm --version`` and the package)."""

__version__ = "0.2.0"
