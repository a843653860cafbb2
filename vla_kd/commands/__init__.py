"""One module per ``vla-kd`` subcommand; each exposes ``CONFIG_NAME`` and a Hydra ``main``."""
