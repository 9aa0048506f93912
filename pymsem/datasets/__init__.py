"""Bundled data sets."""
