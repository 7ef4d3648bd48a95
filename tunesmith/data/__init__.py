"""Data sources -> rows, preflight validation, validation splits and batching."""
