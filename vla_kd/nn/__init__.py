"""Shared neural-network blocks: tokenizers, encoders, decoding."""
