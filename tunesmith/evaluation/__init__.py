"""Metrics, the HTML report and the model card."""
