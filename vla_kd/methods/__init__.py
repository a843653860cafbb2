"""Training methods: each turns a batch into a loss for the shared trainer."""
