"""head-only's head is solved, not approximated: L-BFGS to the optimum of L2-regularised logistic
regression, C chosen by cross-validation on the training split; as good as scikit-learn's tuned
LogisticRegression on the same features."""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import base_config

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.progress import Reporter
from tunesmith.tasks.base import TaskModel
from tunesmith.tasks.classification import ClassificationHead
from tunesmith.tasks.text_classification import TextClassificationTask
from tunesmith.training.solve import C_GRID, solve_head


class _NoBackbone(torch.nn.Module):  # rows carry their features: the backbone never runs
    feature_dim = 64

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)


def _rows(x, y):
    return [{"features": torch.tensor(f, dtype=torch.float32), "label": int(t)} for f, t in zip(x, y)]


def test_solved_head_matches_tuned_sklearn_logistic_regression():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    xtr, xte, ytr, yte = train_test_split(x, y, train_size=500, test_size=500, random_state=0, stratify=y)
    task = TextClassificationTask([str(i) for i in range(10)])
    model = TaskModel(_NoBackbone(), ClassificationHead(64, 10, dropout=0.1))
    tc = config_from_dict({"strategy": {"name": "head-only"}}).resolved().train
    res = solve_head(model, task, _rows(xtr, ytr), _rows(xte, yte), tc, [str(v) for v in ytr], Reporter(True))
    ours = res.history[0]["accuracy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = LogisticRegressionCV(Cs=C_GRID, cv=5, max_iter=5000).fit(xtr, ytr)
        exact = LogisticRegression(C=res.solver["C"], tol=1e-10, max_iter=20000).fit(xtr, ytr)
    theirs = float((tuned.predict(xte) == yte).mean())
    assert ours >= theirs - 2 / len(yte), (ours, theirs)  # within two test images of sklearn's tuned model

    # and it is the optimum: sklearn's tightly converged solution at the same C scores no lower objective
    def objective(w, b):
        xt, yt = torch.tensor(xtr, dtype=torch.float64), torch.tensor(ytr)
        ce = torch.nn.functional.cross_entropy(xt @ w.T + b, yt)
        return float(ce + 0.5 / (res.solver["C"] * len(ytr)) * (w * w).sum())

    head = model.head.classifier
    mine = objective(head.weight.detach().double(), head.bias.detach().double())
    assert mine <= objective(torch.tensor(exact.coef_), torch.tensor(exact.intercept_)) + 1e-5
    assert res.solver["folds"] == 5 and len(res.solver["cv"]) == len(C_GRID)


def test_tiny_classes_still_solve():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 64)) + np.repeat(np.eye(3, 64) * 4, 2, axis=0), np.repeat(np.arange(3), 2)
    task = TextClassificationTask(["a", "b", "c"])
    model = TaskModel(_NoBackbone(), ClassificationHead(64, 3, dropout=0.0))
    tc = config_from_dict({"strategy": {"name": "head-only"}}).resolved().train
    res = solve_head(model, task, _rows(x, y), _rows(x, y), tc, [str(v) for v in y], Reporter(True))
    assert res.solver["folds"] == 2 and res.history[0]["accuracy"] == 1.0


def test_head_only_run_records_its_solve_and_refuses_sgd_settings(tiny_bert_mean, sentiment_csv, tmp_path):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "h")
    del cfg["train"]["epochs"], cfg["train"]["lr"]
    cfg["strategy"] = {"name": "head-only"}
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    solver = m["train"]["head_solver"]
    assert solver["C"] in [c["C"] for c in solver["cv"]] and solver["iterations"] > 0
    assert len(m["history"]) == 1 and m["validation"]["macro_f1"] == m["history"][0]["macro_f1"]
    again = tunesmith.finetune({**cfg, "out": str(tmp_path / "h2")}, quiet=True)
    assert again.metrics == res.metrics  # deterministic
    for key in ("epochs", "lr"):
        bad = {"strategy": {"name": "head-only"}, "train": {key: 3 if key == "epochs" else 0.1}}
        with pytest.raises(ConfigError, match="strategy.solver=sgd"):
            config_from_dict(bad)
    config_from_dict({"strategy": {"name": "head-only", "solver": "sgd"}, "train": {"epochs": 3}})
