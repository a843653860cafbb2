"""``vla-kd report <dir>``: the tables and plots of an experiment, from the run folders its
sweeps wrote (configs/experiment/: rpd_vs_ppo and its clones and PPO from scratch; align_vs_scratch)."""
