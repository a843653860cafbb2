"""Refined policy distillation (RPD: PPO + a teacher term) and its baseline, PPO, as one package:
``algorithm`` (the PPO loop with the term), ``labels`` (the teacher's labels per rollout),
``warm_start`` (cloning the teacher first), ``validation`` and ``tracking`` (SB3 callbacks),
``training_envs``, ``config`` and ``distiller`` (``method=rpd|ppo``)."""
