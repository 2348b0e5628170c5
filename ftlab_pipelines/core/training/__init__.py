"""The training recipe and what it needs: trainer setup, sampling, losses, checkpoints, distributed launch."""
