"""Compile: lower the specification to level matrices and build the PyMC model and its likelihood."""
