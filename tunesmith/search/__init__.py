"""Hyperparameter search (Optuna) over config overrides; every trial is an ordinary api.finetune run."""
