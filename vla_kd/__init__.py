"""vla_kd: distil vision-language-action policies into small, fast students."""
__version__ = "0.1.0"
