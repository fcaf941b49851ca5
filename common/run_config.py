"""The run configuration: every tunable of fairsynth, declared once.

Each field of :class:`RunConfig` is declared with :func:`setting` — its default, its help
text, its group and its valid range or choices — and everything else is derived from that one
declaration:

* validation (:meth:`RunConfig.__post_init__`: types, ranges, choices; the few rules that
  tie two settings together are written out below them);
* the command-line flags of every command (:mod:`simulations.options` generates them);
* the ``[tool.flwr.app.config]`` table of ``pyproject.toml`` (a test keeps it equal to
  :meth:`RunConfig.to_mapping`);
* ``docs/configuration.md`` (``fairsynth settings --markdown`` writes it; a test keeps it
  current).

Flower hands each app ``context.run_config`` (kebab-case keys, from pyproject's table and
``flwr run --run-config``); :meth:`RunConfig.from_mapping` reads it once into this frozen
object, which then travels through the code. A key is the field name with ``-`` for ``_``.
Optional values that TOML cannot spell as "none" use a neutral value (``tolerance = 0``,
``""``); their help says what it means.

Choices that a registry of an upper layer owns (``strategy``: the server's flows;
``synthesizer`` and ``generator``: the client's registries) are checked by that registry,
which lists the valid names; the command line checks them before a run starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from common import datasets
from common.errors import ConfigError
from common.logistic import SOLVERS
from common.partition import PARTITIONS

MODELS = ("logistic", "mlp")
MEASURES = ("sp", "eo")
#: What a client may release (the privacy reports speak of these; clients/pipeline.py
#: implements each one, and a test keeps the two lists equal).
ORDERS = ("fair-then-private", "private-then-fair", "private-only", "fair-only", "real")
#: The orders whose release carries an (ε, δ) guarantee.
PRIVATE_ORDERS = ORDERS[:3]
#: What a client's privacy policy may allow: the bilevel pipeline's orders, and the other
#: client synthesizers by name (``RunConfig.release`` names the one a run asks for).
RELEASES = (*ORDERS, "safes")
#: The releases that carry an (ε, δ) guarantee on the real rows.
PRIVATE_RELEASES = (*PRIVATE_ORDERS, "safes")


def release_settings(release: str) -> dict[str, str]:
    """The settings that ask for ``release``: an order of the bilevel pipeline, or another
    synthesizer by name (a sweep's or comparison's grid of releases)."""
    return {"order": release} if release in ORDERS else {"synthesizer": release}

#: Settings groups, in the order the documentation and ``--help`` show them.
GROUPS = ("federation", "data", "stage 1", "stage 2", "safes", "fair4free", "fadm",
          "server model", "baselines", "output")
#: Synthesizers that run the bilevel pipeline's orders (their fair step in stage 1's place).
ORDERED_SYNTHESIZERS = ("bilevel", "fair4free", "fadm")


def setting(default: Any, help: str, *, group: str, choices: tuple | None = None,
            low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False, aliases: tuple[str, ...] = ()) -> Any:
    """Declare one tunable (a dataclass field carrying its metadata).

    Parameters
    ----------
    default : the value when nothing sets it; its type is the setting's type.
    help : one line for ``--help`` and the configuration reference.
    group : one of :data:`GROUPS`.
    choices : the valid values, when they form a fixed set.
    low, high : the valid range (inclusive unless ``low_open``/``high_open``).
    aliases : extra command-line spellings (``--seeds`` for ``--seed`` in the sweeps).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown settings group {group!r}")
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "choices": choices, "low": low, "high": high,
        "low_open": low_open, "high_open": high_open, "aliases": aliases,
    })


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """All tunables of a federation run; see the module docstring, and ``docs/configuration.md``
    for the table of every setting."""

    # federation
    strategy: str = setting(
        "oneshot", "the server's flow: oneshot (the synthetic-data scheme), fedavg, fairfed or "
                   "dp-fedavg (FedAvg with DP-SGD at the run's ε and δ)",
        group="federation")
    min_clients: int = setting(
        2, "the server waits for this many nodes and keeps a run only with this many valid "
           "replies (simulate: default all clients)", group="federation", low=1)
    timeout: float = setting(3600.0, "seconds the server waits for the replies of one exchange",
                             group="federation", low=0, low_open=True)
    max_rows: int = setting(1_000_000, "row cap of one client's reply", group="federation",
                            low=1)
    seed: int = setting(
        0, "seeds partitioning, splitting, stage 1, model initialisation and local training",
        group="federation", low=0, aliases=("--seeds",))
    # data
    dataset: str = setting("law_school", "named dataset (ignored when csv is set)",
                           group="data", choices=tuple(datasets.DATASETS))
    data_dir: str = setting("", "data folder (empty: $FAIRSYNTH_DATA_DIR, else the user cache)",
                            group="data")
    sensitive: str = setting("", "sensitive column (Adult: sex or race; required with csv)",
                             group="data")
    csv: str = setting("", "your own CSV file instead of a named dataset", group="data")
    privileged: str = setting("", "with csv: the privileged value of the sensitive column",
                              group="data")
    label: str = setting("", "with csv: the label column", group="data")
    favourable: str = setting("", "with csv: the favourable label value", group="data")
    drop: str = setting("", "with csv: columns to ignore, comma-separated", group="data")
    categorical: str = setting("", "with csv: categorical columns, comma-separated",
                               group="data")
    schema: str = setting("", "with csv: the declared schema, a JSON file (`fairsynth schema "
                              "draft` drafts it); the private orders need it", group="data")
    partition: str = setting("iid", "how a simulation splits the rows among the clients",
                             group="data", choices=PARTITIONS)
    alpha: float = setting(0.5, "Dirichlet α over the sensitive attribute (partition dirichlet)",
                           group="data", low=0, low_open=True)
    partition_column: str = setting("", "the natural column to split by (partition column)",
                                    group="data")
    test_fraction: float = setting(0.2, "each client's test share", group="data",
                                   low=0, high=1, low_open=True, high_open=True)
    # stage 1
    synthesizer: str = setting(
        "bilevel", "the client synthesizer: bilevel (the two-stage pipeline, see order), "
                   "fair4free or fadm (the same orders, Fair4Free or FADM in stage 1's place), "
                   "or safes (a DP generator, then the fairness transform TOT)",
        group="stage 1")
    order: str = setting("fair-then-private", "what a client releases (the pipeline's order)",
                         group="stage 1", choices=ORDERS)
    measure: str = setting("sp", "fairness measure: sp (statistical parity) or eo (equal "
                                 "opportunity)", group="stage 1", choices=MEASURES)
    target: float = setting(0.02, "the largest gap (|SPD| or |EOD|) stage 1 may leave on the "
                                  "client's rows; stage 1 finds the penalty itself (0: no "
                                  "target, the paper's penalty ρ)", group="stage 1", low=0,
                            high=1, high_open=True)
    relaxation: str = setting("gap", "what stands in for the gap in stage 1's loss: "
                                            "covariance (the paper's Zafar covariance) or gap "
                                            "(the smooth difference of group rates)",
                              group="stage 1", choices=("covariance", "gap"))
    rho: float = setting(10.0, "fairness penalty weight ρ (not used with a target)",
                         group="stage 1", low=0)
    tolerance: float = setting(0.0, "penalise only |relaxation| > tolerance (0: the penalty "
                                    "ρ·g²)", group="stage 1", low=0)
    lam_in: float = setting(0.0, "inner L2 strength λ_in (0: chosen by 5-fold cross-validation "
                                 "on the rows stage 1 reads)", group="stage 1", low=0)
    lam_out: float = setting(0.1, "outer regulariser on the synthetic rows λ_out",
                             group="stage 1", low=0)
    lr: float = setting(0.05, "Adam step size of the outer problem", group="stage 1", low=0,
                        low_open=True)
    iterations: int = setting(300, "outer iterations T", group="stage 1", low=0)
    stage1_fraction: float = setting(1.0, "synthetic rows Ñ/N", group="stage 1", low=0,
                                     high=1, low_open=True)
    solver: str = setting("newton", "inner solver", group="stage 1", choices=SOLVERS)
    anchor: str = setting("init", "centre of the outer regulariser: init (the initial rows) or "
                                  "zero (METHOD.md's ‖z̃‖²)", group="stage 1",
                          choices=("init", "zero"))
    keep_moments: bool = setting(True, "learned columns keep the client's mean and spread",
                                 group="stage 1")
    utility: str = setting("accuracy", "what stage 1's outer loss rewards on the real rows: "
                                       "accuracy, or balanced (both labels weigh half)",
                           group="stage 1", choices=("accuracy", "balanced"))
    # stage 2
    epsilon: float = setting(1.0, "privacy budget ε of a client's release (the DP generator) or "
                                  "of its whole DP-FedAvg training", group="stage 2",
                             low=0, low_open=True)
    delta: float = setting(1e-6, "δ of the DP generator or DP-FedAvg; must be below 1/N on every "
                                 "client, and is never derived from N (that would disclose N)",
                           group="stage 2", low=0, low_open=True,
                           high=1, high_open=True)
    stage2_fraction: float = setting(1.0, "released rows Ñ₂/N (paper: 1.0 and 0.1)",
                                     group="stage 2", low=0, high=1, low_open=True,
                                     aliases=("--fraction",))
    generator: str = setting("auto", "the DP generator: dp-ctgan (DP-SGD), aim (adaptive "
                                     "noisy marginals), or auto (aim where the fairness step "
                                     "reads only the DP rows: private-then-fair and safes; "
                                     "dp-ctgan otherwise)", group="stage 2")
    generator_options: str = setting("", "the generator's own options as a JSON object",
                                     group="stage 2")
    repair: str = setting("auto", "fair-then-private: how the DP generator's rows are mended "
                                  "before release: relabel (labels drawn from a DP logistic "
                                  "model of the stage-1 rows, a share of the same ε and δ), "
                                  "stage1 (stage 1 again on the DP rows alone), off (the "
                                  "paper), or auto (relabel)",
                          group="stage 2", choices=("auto", "relabel", "stage1", "off"))
    label_share: float = setting(0.5, "fair-then-private's relabel repair: the share of the "
                                      "zCDP budget its DP label model spends (the generator "
                                      "gets the rest)", group="stage 2", low=0, high=1,
                                 low_open=True, high_open=True)
    # safes
    safes_eta: float = setting(0.1, "safes: the largest statistical parity difference of the "
                                    "labels after the transform (η)", group="safes", low=0,
                               high=1)
    safes_distortion: float = setting(0.1, "safes: the share of each (s, x, y) cell's rows the "
                                           "transform may move one step (half of it two steps)",
                                      group="safes", low=0, high=1)
    safes_columns: str = setting("", "safes: the feature columns the transform may change, "
                                     "comma-separated (empty: the most informative about the "
                                     "label, within safes-cells)", group="safes")
    safes_cells: int = setting(256, "safes: the largest domain of the transform (values of its "
                                    "columns × 2 labels)", group="safes", low=4)
    safes_bins: int = setting(4, "safes: equal-width bins of a continuous column on its declared "
                                 "bounds", group="safes", low=2)
    # fair4free
    fair4free_beta: float = setting(1.0, "fair4free: weight β of the distance correlation "
                                         "between the latent codes and s", group="fair4free",
                                    low=0)
    fair4free_epochs: int = setting(60, "fair4free: epochs of the teacher VAE and of the student",
                                    group="fair4free", low=1)
    fair4free_latent: int = setting(8, "fair4free: size of the fair representation",
                                    group="fair4free", low=1)
    # fadm
    fadm_lambda_y: float = setting(1.0, "fadm: guidance strength of the label classifier λ_y",
                                   group="fadm", low=0)
    fadm_lambda_z: float = setting(1.0, "fadm: guidance strength of the sensitive classifier's "
                                        "entropy λ_z", group="fadm", low=0)
    fadm_domain: str = setting("", "fadm: the categorical column whose categories are the "
                                   "meta-learning domains (Adult: race; empty: one domain, no "
                                   "meta-step)", group="fadm")
    fadm_iterations: int = setting(2000, "fadm: training iterations (batches)", group="fadm",
                                   low=1)
    fadm_steps: int = setting(100, "fadm: diffusion steps T", group="fadm", low=1)
    # server model
    model: str = setting("logistic", "the server's model (and the baselines' shared model)",
                         group="server model", choices=MODELS)
    lam_server: float = setting(0.0, "L2 strength of the logistic model (METHOD.md eq. 16; 0: "
                                     "chosen by 5-fold cross-validation on the rows the server "
                                     "trains on; the baselines then train without it)",
                                group="server model", low=0)
    mlp_hidden: str = setting("320,320", "MLP hidden widths, comma-separated",
                              group="server model")
    mlp_epochs: int = setting(10, "server-side MLP epochs (one-shot)", group="server model",
                              low=1)
    mlp_lr: float = setting(1e-3, "Adam step size of the server-side MLP",
                            group="server model", low=0, low_open=True)
    mlp_batch_size: int = setting(256, "minibatch size of the server-side MLP",
                                  group="server model", low=1)
    mlp_weight_decay: float = setting(1e-4, "L2 strength of the MLP (everywhere)",
                                      group="server model", low=0)
    # baselines
    rounds: int = setting(20, "FedAvg/FairFed rounds R", group="baselines", low=1)
    local_epochs: int = setting(1, "local epochs per round", group="baselines", low=1)
    local_lr: float = setting(0.1, "local SGD step size", group="baselines", low=0,
                              low_open=True)
    local_batch_size: int = setting(64, "local minibatch size", group="baselines", low=1)
    fairfed_beta: float = setting(1.0, "FairFed's weight step β", group="baselines", low=0)
    fairfed_reweigh: bool = setting(True, "FairFed clients reweigh their rows locally "
                                          "(Kamiran & Calders)", group="baselines")
    dp_sample_rate: float = setting(0.01, "DP-FedAvg: Poisson sampling rate q of local DP-SGD "
                                          "(an epoch is round(1/q) steps; public, so ε never "
                                          "depends on a client's row count)", group="baselines",
                                    low=0, high=1, low_open=True)
    dp_clip: float = setting(1.0, "DP-FedAvg: per-sample gradient norm bound C", group="baselines",
                             low=0, low_open=True)
    # output
    results_path: str = setting("", "if set, the ServerApp also writes its result as JSON here",
                                group="output")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field, getattr(self, field.name))
        if self.target and self.tolerance:
            raise ConfigError(
                f"run config: target = {self.target:g} and tolerance = {self.tolerance:g} are "
                "two constrained forms of stage 1; give one of them (target = 0 turns the "
                "target off and uses the penalty ρ with its tolerance).")
        if self.partition == "column" and not self.partition_column:
            raise ConfigError("run config: partition = 'column' needs partition-column, the "
                              "name of the column to split by.")
        if self.csv and not self.schema and self.release in PRIVATE_RELEASES:
            raise ConfigError(
                f"run config: {self.release!r} releases differentially private rows, but "
                f"csv = {self.csv!r} has no declared schema: a schema read from the rows (their "
                "categories, which columns hold numbers, their ranges) goes to the server and "
                "discloses them. Draft one with `fairsynth schema draft --csv FILE ... --out "
                "schema.json`, review it and delete its draft key, then pass `--schema "
                "schema.json` (run config: schema = \"schema.json\"); or use order fair-only or "
                "real.")
        if self.repair == "stage1" and self.utility == "balanced":
            raise ConfigError(
                "run config: repair = 'stage1' with utility = 'balanced': the balanced "
                "utility's stage-1 rows are label-balanced on purpose, so a DP generator fitted "
                "on them draws label-balanced rows, and a gap measured on those is not the real "
                "rows' gap. Use repair = 'auto' (relabel) or 'off' with the balanced utility.")
        self.hidden_sizes  # noqa: B018 (validates mlp-hidden)
        self.generator_kwargs  # noqa: B018 (validates generator-options)

    # ------------------------------------------------------------------ derived values

    @property
    def release(self) -> str:
        """What a client releases in this run: the order for ``bilevel``, else the synthesizer's
        name (what a privacy policy allows or refuses)."""
        return self.order if self.synthesizer in ORDERED_SYNTHESIZERS else self.synthesizer

    @property
    def dp_generator(self) -> str:
        """``generator`` with auto resolved: aim where the fairness step runs on the DP rows
        alone (private-then-fair, safes), so that a gap measured on them stands for the real
        rows' gap; dp-ctgan where the generator learns rows that are already fair
        (fair-then-private) or none is asked for (docs/fairness.md, 'Which generator for
        private-then-fair')."""
        if self.generator != "auto":
            return self.generator
        reads_dp_rows = self.synthesizer == "safes" or (
            self.synthesizer in ORDERED_SYNTHESIZERS and self.order == "private-then-fair")
        return "aim" if reads_dp_rows else "dp-ctgan"

    @property
    def repair_mode(self) -> str:
        """How fair-then-private mends its DP rows (``repair`` with auto resolved)."""
        return "relabel" if self.repair == "auto" else self.repair

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
        """L2 strength of the configured model in the baselines' local training. With
        ``lam-server = 0`` (λ by cross-validation) the logistic baselines train the
        unregularised loss: their server holds no rows to cross-validate on, and R rounds of
        local SGD stop early anyway."""
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
                close = difflib.get_close_matches(str(key), [key_of(n) for n in fields], n=3)
                hint = f" Did you mean {close}?" if close else ""
                raise ConfigError(
                    f"run config: unknown key {key!r}.{hint} Valid keys: "
                    f"{sorted(key_of(n) for n in fields)}."
                )
            values[name] = value
        for name, value in overrides.items():
            if name not in fields:
                raise ConfigError(f"run config: unknown field {name!r}.")
            values[name] = value
        return cls(**{name: _coerce(name, value, fields[name].default)
                      for name, value in values.items()})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes`` (field names), validated like :meth:`from_mapping`."""
        return RunConfig.from_mapping(self.to_mapping(), **changes)

    def to_mapping(self) -> dict[str, Any]:
        """The kebab-case mapping (what ``[tool.flwr.app.config]`` holds): the form a run
        configuration takes only at the Flower boundary."""
        return {key_of(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def settings() -> Iterator[dataclasses.Field]:
    """Every declared setting, in declaration order."""
    return iter(dataclasses.fields(RunConfig))


def key_of(name: str) -> str:
    """The kebab-case key of field ``name``."""
    return name.replace("_", "-")


def expected(field: dataclasses.Field) -> str:
    """What a valid value of ``field`` looks like, in words."""
    meta, kind = field.metadata, type(field.default)
    if meta["choices"]:
        return f"one of {list(meta['choices'])}"
    noun = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        left, right = "(" if meta["low_open"] else "[", ")" if meta["high_open"] else "]"
        return f"{noun} in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{noun} {'>' if meta['low_open'] else '≥'} {low:g}"
    return noun


def _check(field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    bad = False
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"run config: {key_of(field.name)} must be finite, got {value}.")
    if meta["choices"] and value not in meta["choices"]:
        bad = True
    if meta["low"] is not None and (value < meta["low"] or
                                    (meta["low_open"] and value == meta["low"])):
        bad = True
    if meta["high"] is not None and (value > meta["high"] or
                                     (meta["high_open"] and value == meta["high"])):
        bad = True
    if bad:
        raise ConfigError(f"run config: {key_of(field.name)} = {value!r} is invalid; use "
                          f"{expected(field)}.")


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
        noun = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}[kind]
        raise ConfigError(
            f"run config: {key_of(name)} must be {noun} (like {default!r}), got "
            f"{value!r} ({type(value).__name__})."
        )
    return value
