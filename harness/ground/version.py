"""The FeynTune version: shown by `feyntune --version` and recorded in data manifests."""

__version__ = "0.1.0"
