"""The search space: a YAML mapping of dotted config keys to ranges or choices, checked against the
config schema before any trial runs.

    train.lr:            {low: 1.0e-5, high: 1.0e-3, log: true}      # float range
    train.epochs:        {low: 2, high: 6}                           # int range (both ints), step 1
    train.batch_size:    {choices: [16, 32]}
    strategy.name:       {choices: [head-only, full, lora]}
    strategy.lora.rank:  {low: 4, high: 32, log: true, when: {strategy.name: lora}}   # only under lora

`step` sets a grid (float or int); `when` makes a parameter apply only when other parameters take
the given values (a strategy's own options under that strategy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..config import RunConfig, config_from_dict, set_dotted
from ..errors import ConfigError


@dataclass
class Param:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: list[Any] | None = None
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> dict[str, Any]:
        d = {"choices": self.choices} if self.choices is not None else {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        if self.when:
            d["when"] = self.when
        return d


@dataclass
class Space:
    params: list[Param]
    source: str

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's config overrides; a parameter whose `when` does not hold is not sampled."""
        values: dict[str, Any] = {}
        for p in self.params:
            if all(values.get(k) == v for k, v in p.when.items()):
                values[p.key] = p.suggest(trial)
        return values

    def as_dict(self) -> dict[str, Any]:
        return {p.key: p.describe() for p in self.params}


def _field(key: str):
    """The pydantic field a dotted key names, or a ConfigError naming the key."""
    model: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"search space: unknown config key {key!r} (allowed under {where}: {', '.join(fields)})")
        ann = fields[part].annotation
        if i < len(parts) - 1:
            sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
            if not sub:
                raise ConfigError(f"search space: {key!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            model = sub[0]
    return fields[parts[-1]]


def _number(v):
    """YAML 1.1 reads 1e-5 (no dot) as a string; a number written so is still a number."""
    if isinstance(v, str):
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
    return v


def load_space(path: str | Path, base: RunConfig) -> Space:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file not found: {p}")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{p}: a search space is a mapping of config keys to ranges or choices, e.g. train.lr: ...")
    params = []
    for key, spec in tree.items():
        _field(key)
        if key == "out" or key.startswith("data."):
            raise ConfigError(f"{p}: {key!r}: the output folder and the data are the study's, not parameters")
        if not isinstance(spec, dict):
            raise ConfigError(f"{p}: {key}: give {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
        unknown = set(spec) - {"low", "high", "log", "step", "choices", "when"}
        if unknown:
            raise ConfigError(
                f"{p}: {key}: unknown field(s) {', '.join(sorted(unknown))}; use low/high/log/step/choices/when"
            )
        when = spec.get("when") or {}
        if not isinstance(when, dict) or any(k not in tree for k in when):
            raise ConfigError(f"{p}: {key}: `when` must map other parameters of this space to values, got {when!r}")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or set(spec) - {"choices", "when"}:
                raise ConfigError(f"{p}: {key}: choices must be a non-empty list, with no low/high")
            params.append(Param(key, choices=choices, when=when))
            continue
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"{p}: {key}: a range needs both low and high (or give choices)")
        low, high = _number(spec["low"]), _number(spec["high"])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ConfigError(f"{p}: {key}: need numbers with low < high, got low {low!r}, high {high!r}")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{p}: {key}: a log range needs low > 0, got {low!r}")
        step = _number(spec.get("step"))
        if step is not None and log:
            raise ConfigError(f"{p}: {key}: step and log cannot be combined")
        integer = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
        params.append(Param(key, float(low), float(high), log, step, integer, when=when))
    params.sort(key=lambda q: bool(q.when))  # conditions are sampled before what depends on them
    space = Space(params, str(p))
    # every value the space can take must make a valid config: try the ends of each range
    for param in params:
        for value in param.choices if param.choices is not None else [param.low, param.high]:
            value = int(value) if param.integer else value
            trial_tree = with_params(base, {**{k: v for k, v in param.when.items()}, param.key: value})
            try:
                config_from_dict(trial_tree, f"{p} ({param.key}={value!r})")
            except ConfigError as e:
                raise ConfigError(f"{p}: {param.key}={value!r} is not a valid config:\n{e}") from None
    return space


def with_params(base: RunConfig, values: dict[str, Any]) -> dict:
    """The base config as the user wrote it (defaults unset) with the trial's values set."""
    from ..strategies import STRATEGIES

    tree = base.model_dump(mode="json", exclude_unset=True)
    for key, value in values.items():
        set_dotted(tree, key, value)
    strategy = (tree.get("strategy") or {}).get("name", "full")
    return STRATEGIES.get(strategy).adapt(tree)
