"""Hydra configs, shipped as package data so non-editable installs find them."""
