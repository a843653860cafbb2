"""On-policy distillation (DAgger; VLA-OPD's token objectives next): the student acts, the
teacher labels the states the student reached, the student learns from the growing aggregate.
``config`` (``method=opd``), ``rollouts`` (β-mixture episodes and batched teacher labels),
``aggregate`` (the labelled states as a LeRobot v3 dataset) and ``distiller`` (the rounds)."""
