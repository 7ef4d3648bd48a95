"""The training loop, optimizer, checkpoints and precision choice."""
