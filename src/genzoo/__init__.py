"""genzoo: train, sample and evaluate class-conditional image generators."""

__version__ = "0.1.0"
