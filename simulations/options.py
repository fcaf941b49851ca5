"""Command-line flags, generated from the one declaration of every setting.

Each command names the settings groups it takes (:data:`common.run_config.GROUPS`); every
setting of those groups becomes a flag ``--key`` with the declared type, choices, default and
help, so that a new setting needs no edit here. A sweep command passes ``grid``: those
settings take several values (``--rho 0 10 100``) and the command's own default grid.

Flags that the user did not give are absent from the parsed namespace
(``argparse.SUPPRESS``), so :func:`run_config` builds the :class:`RunConfig` from the
declaration's defaults plus what was given, and :func:`given` tells the two apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clients.policy import PrivacyPolicy
from common import datasets, partition
from common.errors import ConfigError
from common.partition import ClientSplit
from common.run_config import (
    GROUPS,
    RELEASES,
    RunConfig,
    expected,
    key_of,
    release_settings,
    settings,
)
from common.schema import TabularData

#: Runtime flags that are not run settings: how many clients a simulation has.
CLIENTS_HELP = "number of clients K (default: 2)"
#: The order of a command that offers no ``--order`` (``stage1-sweep``, ``deploy-split``,
#: ``schema draft``): it runs no DP generator, and its configuration says so, so that the rule
#: that a private order on your own CSV needs a declared schema (:class:`RunConfig`) does not
#: stop it.
ORDER_WITHOUT_FLAG = "fair-only"

#: Grid settings that say how hard stage 1 pushes: a sweep point has one of them. A target
#: point asks for ``|gap| ≤ τ`` (its ρ is not used); a ρ point is the paper's penalty with no
#: target (ρ = 0: the real rows, no stage 1).
KNOBS = ("target", "rho")


def add_settings(parser: argparse.ArgumentParser, groups: Iterable[str] = GROUPS, *,
                 grid: Mapping[str, Sequence[Any]] | None = None,
                 include: Iterable[str] = (), skip: Iterable[str] = ()) -> None:
    """Add a flag for every setting of ``groups`` and every setting named in ``include`` or
    ``grid`` (names in ``skip`` left out).

    ``grid`` maps setting names to a sweep's default values; those flags take one or more
    values. Settings keep the declaration's default; the flag is absent from the namespace
    unless given. A parser without ``--order`` gets :data:`ORDER_WITHOUT_FLAG`.
    """
    grid = dict(grid or {})
    groups, skip, include = list(groups), set(skip), set(include) | set(grid)
    unknown = set(grid) - {f.name for f in settings()}
    if unknown:
        raise ValueError(f"grid names unknown settings {sorted(unknown)}")
    arg_groups: dict[str, argparse._ArgumentGroup] = {}
    offered: set[str] = set()
    for field in settings():
        meta = field.metadata
        if (meta["group"] not in groups and field.name not in include) or field.name in skip:
            continue
        group = arg_groups.get(meta["group"])
        if group is None:
            group = arg_groups[meta["group"]] = parser.add_argument_group(meta["group"])
        flags = [f"--{key_of(field.name)}"]
        if field.name in grid:
            flags += list(meta["aliases"])
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        kind = type(field.default)
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            default = field.default
        else:
            kwargs["type"] = kind
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            if field.name == "order" and field.name in grid:  # a grid of releases: safes too
                kwargs["choices"] = RELEASES
            default = field.default
        if field.name in grid:
            kwargs["nargs"] = "*" if field.name in KNOBS else "+"
            kwargs["default"] = list(grid[field.name])
            default = " ".join(f"{v:g}" if isinstance(v, float) else str(v)
                               for v in grid[field.name])
        shown = f"{default!r}" if isinstance(default, str) and field.name not in grid else default
        kwargs["help"] = f"{meta['help']} (default: {shown})"
        if kind is not bool and not meta["choices"]:
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}[kind]
        group.add_argument(*flags, **kwargs)
        offered.add(field.name)
    if "order" not in offered:
        parser.set_defaults(order=ORDER_WITHOUT_FLAG)


def add_clients(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """``--clients K``: a runtime flag (the number of simulated nodes), not a run setting;
    ``many``: one or more values (a list)."""
    if many:
        parser.add_argument("--clients", type=int, nargs="+", default=[2], metavar="K",
                            help=CLIENTS_HELP + "; several values run the comparison for each")
    else:
        parser.add_argument("--clients", type=int, default=2, help=CLIENTS_HELP)
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="run on this existing Ray cluster (e.g. 127.0.0.1:6379, or auto) "
                             "instead of an embedded one; default: $RAY_ADDRESS if set")


def add_fault(parser: argparse.ArgumentParser) -> None:
    """``--inject-fault K:KIND[@PHASE]`` (testing the federation's handling of failures)."""
    parser.add_argument("--inject-fault", action="append", default=[], metavar="K:KIND[@PHASE]",
                        help="make the client of partition K fail on purpose (testing): KIND "
                             "raise, hang or die; PHASE query (default), train or evaluate; "
                             "repeatable")


def add_policy(parser: argparse.ArgumentParser, *, nonprivate: bool = False,
               max_epsilon: float | None = None) -> None:
    """The clients' privacy policy (:mod:`clients.policy`). In a simulation or a local
    deployment one user holds every client, so the command line states the policy that every
    node applies; ``nonprivate`` is the default of ``--allow-nonprivate`` (true for the commands
    that run the FedAvg and FairFed baselines), ``max_epsilon`` that of ``--allow-epsilon``
    (default: the clients' own default)."""
    default = PrivacyPolicy()
    if max_epsilon is not None:
        default = dataclasses.replace(default, max_epsilon=max_epsilon)
    group = parser.add_argument_group("the clients' privacy policy (what every node agrees to)")
    group.add_argument("--allow-orders", nargs="+", choices=RELEASES,
                       default=list(default.orders), metavar="RELEASE",
                       help="orders (and other synthesizers, by name) the clients run (default: "
                       "the private "
                       f"ones, {' '.join(default.orders)})")
    group.add_argument("--allow-epsilon", type=float, default=default.max_epsilon, metavar="X",
                       help=f"largest ε a release may spend (default: {default.max_epsilon:g})")
    group.add_argument("--allow-delta", type=float, default=default.max_delta, metavar="X",
                       help=f"largest δ a release may use (default: {default.max_delta:g})")
    group.add_argument("--allow-nonprivate", action=argparse.BooleanOptionalAction,
                       default=nonprivate, help="answer the handlers without a guarantee: exact "
                       "column sums and local training (FedAvg, FairFed) and an exact evaluation "
                       f"(default: {str(nonprivate).lower()})")
    group.add_argument("--evaluation-epsilon", type=float, default=default.evaluation_epsilon,
                       metavar="X", help="ε of the private evaluation of the final model "
                       f"(default: {default.evaluation_epsilon:g})")
    group.add_argument("--noise-seed", type=int, default=None, metavar="N",
                       help="seed the DP noise, to reproduce a private run (each client keys it "
                       "with its own seed; voids the guarantee against anyone who knows it; "
                       "default: fresh OS entropy)")
    group.add_argument("--secure-mode", action="store_true",
                       help="hardened DP noise against floating-point attacks")


def policy(args: argparse.Namespace) -> PrivacyPolicy:
    """The policy :func:`add_policy`'s flags state."""
    return PrivacyPolicy(orders=tuple(args.allow_orders), max_epsilon=args.allow_epsilon,
                         max_delta=args.allow_delta, nonprivate=args.allow_nonprivate,
                         evaluation_epsilon=args.evaluation_epsilon, noise_seed=args.noise_seed,
                         secure_mode=args.secure_mode)


def min_clients_default(args: argparse.Namespace) -> dict[str, int]:
    """A simulation keeps a run only if every client replies, unless ``--min-clients`` says
    otherwise."""
    return {} if "min_clients" in vars(args) else {"min_clients": args.clients}


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (field name → value)."""
    names = {f.name for f in settings()}
    return {k: v for k, v in vars(args).items() if k in names}


def run_config(args: argparse.Namespace, **overrides: Any) -> RunConfig:
    """The :class:`RunConfig` of the flags given (grid settings excluded: pass one value of
    each as ``overrides``); raises ConfigError naming the flag."""
    values = {k: v for k, v in given(args).items() if not isinstance(v, list)}
    values.update(overrides)
    penalty = sorted({"rho", "tolerance"} & set(values))
    default_target = RunConfig.target  # the declared default (a dataclass field's default)
    if penalty and "target" not in values and default_target:
        flags = " and ".join(f"--{key_of(k)}" for k in penalty)
        raise ConfigError(
            f"{flags} set the paper's penalty form of stage 1, which the fairness target "
            f"replaces (default --target {default_target:g}); add --target 0 to use the "
            "penalty, or drop them and choose --target.")
    try:
        return RunConfig.from_mapping(None, **values)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("run config: ", "", 1)) from exc


def grid_values(args: argparse.Namespace, name: str) -> list[Any]:
    """The values of grid setting ``name`` (a list even when one was given)."""
    value = getattr(args, name)
    return list(value) if isinstance(value, list) else [value]


def release_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """``point`` with its ``order`` (if any) read as a release: safes becomes the synthesizer."""
    point = dict(point)
    if "order" in point:
        point.update(release_settings(point.pop("order")))
    return point


def sweep_points(args: argparse.Namespace, names: Sequence[str]
                 ) -> tuple[RunConfig, list[dict[str, Any]]]:
    """A sweep's base configuration and its grid: every combination of the values of the grid
    settings ``names`` (in that nesting order), each validated before any work starts.

    The knobs (:data:`KNOBS`) among ``names`` are not crossed with each other: their values
    make one list of points, the targets then the ρ values, at the position of the first."""
    base = run_config(args)
    axes: list[list[dict[str, Any]]] = []
    knobs = [n for n in names if n in KNOBS]
    for name in names:
        if name not in KNOBS:
            values = grid_values(args, name)
            if not values:
                raise ConfigError(f"--{key_of(name)} needs at least one value.")
            axes.append([{name: v} for v in values])
        elif name == knobs[0]:
            axes.append(knob_points(args, knobs))
    points = [{k: v for part in combo for k, v in part.items()}
              for combo in itertools.product(*axes)]
    if not points:
        flags = " or ".join(f"--{key_of(k)}" for k in knobs)
        raise ConfigError(f"the grid is empty: give at least one value of {flags}.")
    for point in points:
        try:
            base.replace(**release_point(point))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("run config: ", "", 1)) from exc
    return base, points


def knob_points(args: argparse.Namespace, knobs: Sequence[str]) -> list[dict[str, Any]]:
    """The stage-1 points of a sweep: ``{"target": τ}`` per target, then ``{"rho": ρ,
    "target": 0}`` per ρ."""
    points = []
    if "target" in knobs:
        for tau in grid_values(args, "target"):
            if not tau > 0:
                raise ConfigError(f"--target {tau:g}: a sweep's targets must be > 0 (the points "
                                  "without a target are given by --rho).")
            points.append({"target": tau})
    if "rho" in knobs:
        points += [{"rho": rho, "target": 0.0} for rho in grid_values(args, "rho")]
    return points


def point_label(point: Mapping[str, Any]) -> str:
    """``τ = 0.05`` or ``ρ = 10``: the knob of a sweep point (or record)."""
    return f"τ = {point['target']:g}" if point.get("target") else f"ρ = {point['rho']:g}"


def client_splits(config: RunConfig, clients: int) -> list[ClientSplit]:
    """The federation's train/test splits of the dataset that ``config`` names."""
    return split_clients(load_data(config), config, clients)


def check_measures(base: RunConfig, points: list[dict], clients: int) -> None:
    """Before a sweep does any work: the first seed's data, split among the clients, checked
    against every fairness measure of the grid (so nothing is half-written)."""
    splits = client_splits(base.replace(seed=points[0]["seed"]), clients)
    for measure in sorted({p["measure"] for p in points}):
        splits[0].train.check_measure(measure)


def add_out(parser: argparse.ArgumentParser, default: Path | None = None) -> None:
    """``--out DIR``: where a command writes its results."""
    if default is None:
        parser.add_argument("--out", type=Path, required=True, help="output folder")
    else:
        parser.add_argument("--out", type=Path, default=default,
                            help=f"output folder (default: {default})")


def args_record(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as JSON-ready values (for results files)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k != "func"}


def check_clients(clients: int) -> None:
    if clients < 1:
        raise ConfigError(f"--clients must be ≥ 1, got {clients}: a federation needs at "
                          "least one client.")


def load_data(config: RunConfig) -> TabularData:
    """The whole dataset that ``config`` names (a named dataset or your own CSV)."""
    if config.csv:
        missing = [f"--{k}" for k in ("sensitive", "label") if not getattr(config, k)]
        if missing and not config.schema:
            raise ConfigError(f"--csv needs {' '.join(missing)} as well (the sensitive and "
                              "the label column), or --schema with a schema that names them.")
        names = config.name_list
        return datasets.load_csv(config.csv, sensitive=config.sensitive or None,
                                 privileged=config.privileged or None,
                                 label=config.label or None,
                                 favourable=config.favourable or None, drop=names["drop"],
                                 categorical=names["categorical"],
                                 schema=config.schema or None)
    return datasets.load(config.dataset, root=config.data_dir or None,
                         sensitive=config.sensitive or None, seed=config.seed)


def split_clients(data: TabularData, config: RunConfig, clients: int) -> list[ClientSplit]:
    """The federation's split of ``data`` into ``clients`` train/test splits."""
    return partition.federated_split(data, clients=clients, method=config.partition,
                                     seed=config.seed, alpha=config.alpha,
                                     column=config.partition_column or None,
                                     test_fraction=config.test_fraction)


def describe(config: RunConfig) -> dict[str, Any]:
    """The settings that differ from the declaration's defaults (for results files)."""
    default = RunConfig()
    return {key_of(f.name): getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


def settings_markdown() -> str:
    """``docs/configuration.md``: every setting, by group, from the declaration."""
    lines = [
        "# Configuration reference",
        "",
        "Every tunable of a run, generated from its one declaration in "
        "`common/run_config.py` by `fairsynth settings --write` (a test keeps this page "
        "current). Each key is a run-config key (`flwr run . --run-config \"key=value\"`, "
        "`[tool.flwr.app.config]` in `pyproject.toml`) and a command-line flag `--key` of "
        "the commands that take its group.",
        "",
    ]
    for group in GROUPS:
        lines += [f"## {group[0].upper()}{group[1:]}", "", "| key | default | valid | meaning |",
                  "|---|---|---|---|"]
        for field in settings():
            if field.metadata["group"] != group:
                continue
            default = json_value(field.default)
            lines.append(f"| `{key_of(field.name)}` | `{default}` | {expected(field)} | "
                         f"{field.metadata['help']} |")
        lines.append("")
    return "\n".join(lines)


def json_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value!r}"
