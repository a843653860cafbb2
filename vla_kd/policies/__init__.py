"""Policies: the contract and simple baselines; students live here too."""
