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
from tunesmith.training.solve import C_GRID, DEFAULT_C, solve_head


@pytest.fixture(autouse=True)
def _one_thread():
    """As api.train runs a head on cached features: its matmuls are too small to share between
    threads, and on a loaded 2-core machine a second thread made these solves 17x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _NoBackbone(torch.nn.Module):  # rows carry their features: the backbone never runs
    def __init__(self, dim: int = 64):
        super().__init__()
        self.feature_dim = dim
        self.unused = torch.nn.Linear(1, 1)


def _rows(x, y):
    return [{"features": torch.tensor(f, dtype=torch.float32), "label": int(t)} for f, t in zip(x, y)]


def _solve(x, y, vx, vy, classes: int, reporter=None, c=None, **train):
    task = TextClassificationTask([str(i) for i in range(classes)])
    torch.manual_seed(0)
    model = TaskModel(_NoBackbone(x.shape[1]), ClassificationHead(x.shape[1], classes, dropout=0.1))
    tc = config_from_dict({"strategy": {"name": "head-only"}, "train": train}).resolved().train
    res = solve_head(model, task, _rows(x, y), _rows(vx, vy), tc, [str(v) for v in y], reporter or Reporter(True), c)
    return model, res


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, train_size=500, test_size=500, random_state=0, stratify=y)
    return xtr, ytr, xte, yte


def test_solved_head_matches_tuned_sklearn_logistic_regression_and_is_the_optimum(digits, capsys):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    xtr, ytr, xte, yte = digits
    model, res = _solve(xtr, ytr, xte, yte, 10, Reporter(False))
    logged = capsys.readouterr().err
    assert "head solved by L-BFGS" in logged and "chosen by 5-fold cross-validation" in logged
    ours, c = res.history[0]["accuracy"], res.solver["C"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = LogisticRegressionCV(Cs=C_GRID, cv=5, max_iter=2000).fit(xtr, ytr)  # lbfgs, multinomial
        exact = LogisticRegression(C=c, tol=1e-10, max_iter=20000).fit(xtr, ytr)
    theirs = float((tuned.predict(xte) == yte).mean())
    assert ours >= theirs - 1 / len(yte), (ours, theirs)  # at least as good, to one test image

    # The optimum of what sklearn minimises at the same C (C * sum CE + ||W||^2 / 2, i.e. mean CE +
    # ||W||^2 / (2 C N)): our objective is no higher than its tightly converged solution's, and the
    # gradient at our weights (in float64) is zero to solver precision.
    xt, yt = torch.tensor(xtr, dtype=torch.float64), torch.tensor(ytr)

    def objective(w, b):
        return torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + 0.5 / (c * len(ytr)) * (w * w).sum()

    head = model.head.classifier
    w = head.weight.detach().double().requires_grad_(True)
    b = head.bias.detach().double().requires_grad_(True)
    mine = objective(w, b)
    mine.backward()
    mine = float(mine.detach())
    assert mine <= float(objective(torch.tensor(exact.coef_), torch.tensor(exact.intercept_))) + 1e-6
    assert max(float(w.grad.abs().max()), float(b.grad.abs().max())) < 1e-5
    assert abs(res.solver["objective"] - mine) < 1e-5
    assert res.solver["folds"] == 5 and [r["C"] for r in res.solver["cv"]] == list(C_GRID)
    assert min(res.solver["cv"], key=lambda r: r["cv_loss"])["C"] == c  # the held-out loss chose it


def test_solve_is_deterministic_and_a_set_c_skips_cross_validation(digits):
    xtr, ytr, xte, yte = (a[:200] for a in digits)
    m1, r1 = _solve(xtr, ytr, xte, yte, 10)
    m2, r2 = _solve(xtr, ytr, xte, yte, 10)
    assert r1.history == r2.history and r1.solver["C"] == r2.solver["C"]
    for (k, a), b in zip(m1.head.state_dict().items(), m2.head.state_dict().values()):
        assert torch.equal(a, b), k

    _, fixed = _solve(xtr, ytr, xte, yte, 10, c=0.5)
    assert fixed.solver["C"] == 0.5 and fixed.solver["folds"] == 0 and fixed.solver["cv"] == []


@pytest.mark.parametrize("per_class", [1, 2])
def test_tiny_classes_still_solve(per_class):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), per_class)
    x = rng.normal(size=(len(y), 64)) + np.eye(3, 64)[y] * 4
    _, res = _solve(x, y, x, y, 3)
    # one row a class: a held-out row's class is never in its fold's fit, so nothing can rank C
    assert res.solver["folds"] == (2 if per_class == 2 else 0) and res.history[0]["accuracy"] == 1.0
    assert per_class == 2 or res.solver["C"] == DEFAULT_C
    _, one = _solve(x[:1], y[:1], x, y, 3)  # one row: nothing to hold out
    assert one.solver["folds"] == 0 and one.solver["C"] == DEFAULT_C


def test_head_only_run_records_its_solve_and_refuses_sgd_settings(tiny_bert_mean, sentiment_csv, tmp_path):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "h")
    del cfg["train"]["epochs"], cfg["train"]["lr"]
    cfg["strategy"] = {"name": "head-only"}
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    solver = m["train"]["head_solver"]
    assert solver["folds"] == 5 and solver["C"] in [r["C"] for r in solver["cv"]] and solver["iterations"] > 0
    assert len(m["history"]) == 1 and m["validation"]["macro_f1"] == m["history"][0]["macro_f1"]
    # the card and report say how the head was fitted, not SGD epochs and a learning rate that never ran
    card = (res.out / "README.md").read_text()
    assert "Head solved to convergence (L-BFGS" in card and "5-fold cross-validation" in card
    assert "- Epochs:" not in card
    report = (res.out / "report.html").read_text()
    assert "head solved (L-BFGS)" in report and "epochs / lr / batch size" not in report
    again = tunesmith.finetune({**cfg, "out": str(tmp_path / "h2")}, quiet=True)
    assert again.metrics == res.metrics  # deterministic

    for key, value in (("epochs", 3), ("lr", 0.1), ("head_lr", 0.1), ("early_stopping_patience", 2)):
        with pytest.raises(ConfigError, match=f"train.{key}.*strategy.solver=sgd"):
            config_from_dict({"strategy": {"name": "head-only"}, "train": {key: value}})
    with pytest.raises(ConfigError, match="head_c"):
        config_from_dict({"strategy": {"name": "head-only", "solver": "sgd", "head_c": 1.0}})
    config_from_dict({"strategy": {"name": "head-only", "solver": "sgd"}, "train": {"epochs": 3, "lr": 0.1}})
    config_from_dict({"strategy": {"name": "head-only", "head_c": 0.5}})


def test_a_solved_runs_saved_config_loads_and_trains_again(tiny_bert_mean, sentiment_csv, tmp_path):
    from tunesmith.config import load_config

    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "a")
    del cfg["train"]["epochs"], cfg["train"]["lr"]
    cfg["strategy"] = {"name": "head-only"}
    first = tunesmith.finetune(cfg, quiet=True)
    again = tunesmith.finetune(load_config(first.out / "run_config.yaml", {"out": str(tmp_path / "b")}), quiet=True)
    assert again.metrics == first.metrics
