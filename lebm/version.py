"""The version of lebm (read by setup.cfg, ``lebm --version`` and the package)."""

#: The package version, ``major.minor.patch``.
__version__ = "0.2.0"
