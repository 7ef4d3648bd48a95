"""Artifacts for others: merged plain weights (LoRA folded in), with a parity check."""
