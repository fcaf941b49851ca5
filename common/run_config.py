"""The federation's run configuration: every tunable, read once into a frozen dataclass.

Flower hands each app ``context.run_config``: the ``[tool.flwr.app.config]`` table of
``pyproject.toml`` (kebab-case keys), overridden by ``flwr run --run-config``. In the
in-process simulation engine that mapping is empty, so every default lives here, in code;
:meth:`RunConfig.from_mapping` fills in what a mapping leaves out and rejects unknown keys,
wrong types and out-of-range values with a message that names the key and the fix.

A key is the field name with ``-`` for ``_`` (``stage2-fraction`` ↔ ``stage2_fraction``).
Optional values that TOML cannot spell as "none" use a neutral value: ``delta = 0`` means
``δ = 1/(N·√N)``, ``tolerance = 0`` means the penalty ``φ(c) = c²`` (the two coincide),
``""`` means "not set" for strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from typing import Any

from common.datasets import DATASETS
from common.errors import ConfigError
from common.logistic import SOLVERS
from common.partition import PARTITIONS

STRATEGIES = ("oneshot", "fedavg", "fairfed")
MODELS = ("logistic", "mlp")
MEASURES = ("sp", "eo")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """All tunables of a federation run (see the module docstring for the key spelling).

    Attributes
    ----------
    strategy : {"oneshot", "fedavg", "fairfed"}
        The one-shot synthetic-data scheme, or one of the two baselines.
    min_clients : int
        The server waits for this many connected nodes and aborts a one-shot round that
        keeps fewer valid replies.
    timeout : float
        Seconds the server waits for the replies of one exchange.
    max_rows : int
        Row cap of one client's reply; a reply with more rows is rejected.
    dataset, data_dir, sensitive : str
        Named dataset (``law_school``, ``adult``, ``synthetic``), its folder (``""``: the
        ``FAIRSYNTH_DATA_DIR`` environment variable, else the user cache) and, for Adult, the
        sensitive column.
    csv, privileged, label, favourable, drop, categorical : str
        Your own CSV instead of a named dataset (``drop`` and ``categorical`` comma-separated).
    partition, alpha, partition_column, test_fraction : str, float, str, float
        How a simulation splits the dataset among the nodes, and each client's test share.
    seed : int
        Seeds partitioning, splitting, the pipeline (client ``k`` uses ``seed + 1000·k``),
        model initialisation and local training.
    order, measure, rho, tolerance, lam_in, lam_out, lr, iterations, stage1_fraction, solver
        The client pipeline and its stage-1 hyperparameters (METHOD.md, § Stage 1).
    anchor, keep_moments
        Stage 1's outer regulariser centre (``init``: the initial rows; ``zero``: METHOD.md's
        ``‖z̃‖²``) and whether learned columns keep the client's mean and spread
        (:class:`clients.stage1.Stage1Config`).
    epsilon, delta, stage2_fraction, generator, generator_options
        Stage 2: the (ε, δ) budget (``delta = 0``: ``1/(N·√N)``), ``Ñ₂/N``, the DP generator
        and its own options as a JSON object.
    model : {"logistic", "mlp"}
        The server's model (and the baselines' shared model).
    lam_server : float
        L2 strength of the logistic model (METHOD.md eq. 16).
    mlp_hidden : str
        Hidden layer widths, comma-separated (default ``320,320``: 107,201 parameters on Law
        School).
    mlp_epochs, mlp_lr, mlp_batch_size, mlp_weight_decay
        Adam training of the MLP on the server (one-shot); ``mlp_weight_decay`` is its L2
        strength everywhere.
    rounds, local_epochs, local_lr, local_batch_size
        FedAvg/FairFed: rounds ``R`` and each client's local minibatch SGD per round.
    fairfed_beta, fairfed_reweigh
        FairFed's weight step ``β`` and the clients' local reweighing (Kamiran & Calders).
    results_path : str
        If set, the ServerApp also writes its result as JSON to this file.
    """

    strategy: str = "oneshot"
    min_clients: int = 2
    timeout: float = 3600.0
    max_rows: int = 1_000_000
    # data
    dataset: str = "law_school"
    data_dir: str = ""
    sensitive: str = ""
    csv: str = ""
    privileged: str = ""
    label: str = ""
    favourable: str = ""
    drop: str = ""
    categorical: str = ""
    partition: str = "iid"
    alpha: float = 0.5
    partition_column: str = ""
    test_fraction: float = 0.2
    seed: int = 0
    # client pipeline
    order: str = "fair-then-private"
    measure: str = "sp"
    rho: float = 10.0
    tolerance: float = 0.0
    lam_in: float = 1.0
    lam_out: float = 0.1
    lr: float = 0.05
    iterations: int = 300
    stage1_fraction: float = 1.0
    solver: str = "newton"
    anchor: str = "init"
    keep_moments: bool = True
    epsilon: float = 1.0
    delta: float = 0.0
    stage2_fraction: float = 1.0
    generator: str = "dp-ctgan"
    generator_options: str = ""
    # models
    model: str = "logistic"
    lam_server: float = 1.0
    mlp_hidden: str = "320,320"
    mlp_epochs: int = 10
    mlp_lr: float = 1e-3
    mlp_batch_size: int = 256
    mlp_weight_decay: float = 1e-4
    # baselines
    rounds: int = 20
    local_epochs: int = 1
    local_lr: float = 0.1
    local_batch_size: int = 64
    fairfed_beta: float = 1.0
    fairfed_reweigh: bool = True
    # output
    results_path: str = ""

    def __post_init__(self) -> None:
        checks = [
            (self.strategy in STRATEGIES, "strategy", f"one of {list(STRATEGIES)}"),
            (self.model in MODELS, "model", f"one of {list(MODELS)}"),
            (self.measure in MEASURES, "measure", f"one of {list(MEASURES)}"),
            (bool(self.csv) or self.dataset in DATASETS, "dataset",
             f"one of {list(DATASETS)} (or set csv to your own file)"),
            (self.partition in PARTITIONS, "partition", f"one of {list(PARTITIONS)}"),
            (self.partition != "column" or bool(self.partition_column), "partition-column",
             "the name of the column to split by (partition = 'column' needs it)"),
            (self.solver in SOLVERS, "solver", f"one of {list(SOLVERS)}"),
            (self.anchor in ("init", "zero"), "anchor", "'init' or 'zero'"),
            (self.iterations >= 0, "iterations", "an integer ≥ 0"),
            (self.lam_in > 0, "lam-in", "a number > 0"),
            (self.lam_out >= 0, "lam-out", "a number ≥ 0"),
            (self.lr > 0, "lr", "a number > 0"),
            (self.min_clients >= 1, "min-clients", "an integer ≥ 1"),
            (self.timeout > 0, "timeout", "a number of seconds > 0"),
            (self.max_rows >= 1, "max-rows", "an integer ≥ 1"),
            (self.alpha > 0, "alpha", "a number > 0"),
            (0 < self.test_fraction < 1, "test-fraction", "a number in (0, 1)"),
            (self.seed >= 0, "seed", "an integer ≥ 0"),
            (self.rho >= 0, "rho", "a number ≥ 0"),
            (self.tolerance >= 0, "tolerance", "a number ≥ 0 (0: penalty c²)"),
            (self.epsilon > 0, "epsilon", "a number > 0"),
            (0 <= self.delta < 1, "delta", "a number in [0, 1) (0: 1/(N·√N))"),
            (0 < self.stage1_fraction <= 1, "stage1-fraction", "a number in (0, 1]"),
            (0 < self.stage2_fraction <= 1, "stage2-fraction", "a number in (0, 1]"),
            (self.lam_server > 0, "lam-server", "a number > 0"),
            (self.mlp_epochs >= 1, "mlp-epochs", "an integer ≥ 1"),
            (self.mlp_lr > 0, "mlp-lr", "a number > 0"),
            (self.mlp_batch_size >= 1, "mlp-batch-size", "an integer ≥ 1"),
            (self.mlp_weight_decay >= 0, "mlp-weight-decay", "a number ≥ 0"),
            (self.rounds >= 1, "rounds", "an integer ≥ 1"),
            (self.local_epochs >= 1, "local-epochs", "an integer ≥ 1"),
            (self.local_lr > 0, "local-lr", "a number > 0"),
            (self.local_batch_size >= 1, "local-batch-size", "an integer ≥ 1"),
            (self.fairfed_beta >= 0, "fairfed-beta", "a number ≥ 0"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(
                    f"run config: {key} = {getattr(self, key.replace('-', '_'))!r} is invalid; "
                    f"use {expected}."
                )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"run config: {_key(field.name)} must be finite, got {value}.")
        self.hidden_sizes  # noqa: B018 (validates mlp-hidden)
        self.generator_kwargs  # noqa: B018 (validates generator-options)

    # ------------------------------------------------------------------ derived values

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """``mlp_hidden`` as a tuple of layer widths."""
        try:
            sizes = tuple(int(v) for v in self.mlp_hidden.split(",") if v.strip())
        except ValueError:
            sizes = ()
        if not sizes or any(v < 1 for v in sizes):
            raise ConfigError(
                f"run config: mlp-hidden = {self.mlp_hidden!r} is invalid; give comma-separated "
                "positive layer widths such as '320,320'."
            )
        return sizes

    @property
    def network_hidden(self) -> tuple[int, ...]:
        """Hidden widths of the configured model: ``()`` for logistic regression."""
        return () if self.model == "logistic" else self.hidden_sizes

    @property
    def l2(self) -> float:
        """L2 strength of the configured model."""
        return self.lam_server if self.model == "logistic" else self.mlp_weight_decay

    @property
    def generator_kwargs(self) -> dict:
        """``generator_options`` parsed (``{}`` when empty)."""
        if not self.generator_options.strip():
            return {}
        try:
            value = json.loads(self.generator_options)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"run config: generator-options must be a JSON object, got "
                f"{self.generator_options!r} ({exc.msg})."
            ) from exc
        if not isinstance(value, dict):
            raise ConfigError(
                f"run config: generator-options must be a JSON object such as "
                f"'{{\"epochs\": 10}}', got {self.generator_options!r}."
            )
        return value

    @property
    def name_list(self) -> dict[str, list[str]]:
        """``drop`` and ``categorical`` as lists."""
        return {k: [v.strip() for v in getattr(self, k).split(",") if v.strip()]
                for k in ("drop", "categorical")}

    # ------------------------------------------------------------------ conversion

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None, **overrides: Any
                     ) -> RunConfig:
        """Build from a kebab-case mapping (``context.run_config``), then keyword overrides.

        Raises
        ------
        ConfigError
            On an unknown key (with the closest valid ones), a value of the wrong type or
            out of range.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in dict(mapping or {}).items():
            name = str(key).replace("-", "_")
            if name not in fields:
                close = difflib.get_close_matches(str(key), [_key(n) for n in fields], n=3)
                hint = f" Did you mean {close}?" if close else ""
                raise ConfigError(
                    f"run config: unknown key {key!r}.{hint} Valid keys: "
                    f"{sorted(_key(n) for n in fields)}."
                )
            values[name] = value
        for name, value in overrides.items():
            if name not in fields:
                raise ConfigError(f"run config: unknown field {name!r}.")
            values[name] = value
        return cls(**{name: _coerce(name, value, fields[name].default)
                      for name, value in values.items()})

    def to_mapping(self) -> dict[str, Any]:
        """The kebab-case mapping (what ``[tool.flwr.app.config]`` holds)."""
        return {_key(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the field's default, or a ConfigError naming the key."""
    kind = type(default)
    ok = False
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number",
                    str: "a string"}[kind]
        raise ConfigError(
            f"run config: {_key(name)} must be {expected} (like {default!r}), got "
            f"{value!r} ({type(value).__name__})."
        )
    return value
