"""Tactile distillation (HapticVLA): a flow-matching teacher that reads touch, trained on
demonstrations weighted by tactile rewards, and a VLA student that predicts the teacher's tactile
token from camera and proprio. ``config`` (``method=tactile``), ``rewards`` (the sample
weights), ``objectives`` (the losses) and ``distiller`` (the stages)."""
