"""A client's privacy policy: what this node agrees to release, whatever the server asks.

The run configuration is written by whoever submits the run — the server side. If it alone
decided the order, ε, δ and which handlers answer, the server could ask for the real rows
(``order = "real"``), an ε of 1,000 or exact statistics, and no guarantee would hold against it.
The policy is the client's own, read from its **node config** (``flower-supernode
--node-config``, or what a simulation gives its nodes), and every request is checked against it
before any data is read:

``privacy-orders``
    The releases this client runs, comma-separated: the bilevel pipeline's orders and the other
    synthesizers by name (``safes``). Default: the private ones,
    ``fair-then-private,private-then-fair,private-only,safes``.
``privacy-max-epsilon``, ``privacy-max-delta``
    The largest ε and δ a release, or a DP-FedAvg run's whole training, may spend. Defaults:
    1.0 and 1e-5.
``privacy-nonprivate``
    Whether the handlers without a formal guarantee answer at all: ``query.moments`` (exact
    column sums), ``train`` (FedAvg/FairFed local steps on the real rows; DP-FedAvg's DP-SGD
    steps answer under the ε and δ limits instead) and the exact evaluation. Default: false.
``privacy-evaluation-epsilon``
    ε of the private evaluation (the ``(s, y, ŷ)`` cells of the model's test predictions under
    the Gaussian mechanism, :func:`common.privacy.noisy_evaluation_cells`), at the release's δ;
    at most one evaluation per run. Default: 0.5. Ignored when ``privacy-nonprivate`` is true
    (the evaluation is then exact).
``dp-noise-seed``
    A seed for the DP noise, for reproducing a private run. It voids the guarantee against
    anyone who learns it; it is read only here, never from the run config. Each client keys it
    with its own pipeline seed (:func:`client_noise_seed`), so that clients given the same seed
    (one policy for every node) never add the same draws. Default: none (fresh OS entropy on
    every fit).
``dp-secure-mode``
    The hardened noise (:class:`common.privacy.NoiseSource` ``secure``; Opacus' ``secure_mode``
    for DP-SGD). Default: false.

A request outside the policy raises :class:`PolicyError`; the reply names the rule, not data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.errors import ConfigError, PolicyError
from common.run_config import PRIVATE_RELEASES, RELEASES, RunConfig

__all__ = ["PRIVATE_RELEASES", "PolicyError", "PrivacyPolicy", "client_noise_seed"]


def client_noise_seed(noise_seed: int | None, client_seed: int) -> int | None:
    """The DP noise seed of the client whose pipeline seed is ``client_seed``: one
    :class:`numpy.random.SeedSequence` entropy word of ``(noise_seed, client_seed)``, so that
    no two clients, and no two ``noise_seed`` values, share a stream (None: fresh noise).

    Two clients that added the same draws would let the server cancel the noise: the difference
    of their noisy counts would be the exact difference of their true counts."""
    if noise_seed is None:
        return None
    return int(np.random.SeedSequence((noise_seed, client_seed)).generate_state(1)[0])


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"node config: {key} = {value!r} is not a boolean; use true or false.")


@dataclasses.dataclass(frozen=True)
class PrivacyPolicy:
    """See the module docstring; :meth:`from_node_config` reads it."""

    orders: tuple[str, ...] = PRIVATE_RELEASES
    max_epsilon: float = 1.0
    max_delta: float = 1e-5
    nonprivate: bool = False
    evaluation_epsilon: float = 0.5
    noise_seed: int | None = None
    secure_mode: bool = False

    #: Node-config key of each field.
    KEYS = {"orders": "privacy-orders", "max_epsilon": "privacy-max-epsilon",
            "max_delta": "privacy-max-delta", "nonprivate": "privacy-nonprivate",
            "evaluation_epsilon": "privacy-evaluation-epsilon", "noise_seed": "dp-noise-seed",
            "secure_mode": "dp-secure-mode"}

    def __post_init__(self) -> None:
        unknown = sorted(set(self.orders) - set(RELEASES))
        if unknown or not self.orders:
            raise ConfigError(f"node config: {self.KEYS['orders']} names {unknown or 'nothing'}; "
                              f"choose among {list(RELEASES)}.")
        if not self.max_epsilon > 0:  # may be inf: no limit
            raise ConfigError(f"node config: {self.KEYS['max_epsilon']} must be > 0, got "
                              f"{self.max_epsilon}.")
        if not (math.isfinite(self.evaluation_epsilon) and self.evaluation_epsilon > 0):
            raise ConfigError(f"node config: {self.KEYS['evaluation_epsilon']} must be a finite "
                              f"number > 0, got {self.evaluation_epsilon}.")
        if not 0 < self.max_delta < 1:
            raise ConfigError(f"node config: {self.KEYS['max_delta']} must lie in (0, 1), got "
                              f"{self.max_delta}.")
        if self.noise_seed is not None and self.secure_mode:
            raise ConfigError("node config: dp-noise-seed and dp-secure-mode exclude each other "
                              "(the hardened noise cannot be seeded).")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> PrivacyPolicy:
        """The policy a node config states (defaults for what it leaves out)."""
        values: dict[str, Any] = {}
        for field, key in cls.KEYS.items():
            if key not in node_config:
                continue
            raw = node_config[key]
            try:
                if field == "orders":
                    values[field] = tuple(o.strip() for o in str(raw).split(",") if o.strip())
                elif field in ("nonprivate", "secure_mode"):
                    values[field] = _flag(raw, key)
                elif field == "noise_seed":
                    values[field] = int(raw)
                else:
                    values[field] = float(raw)
            except ConfigError:
                raise
            except ValueError:
                raise ConfigError(f"node config: {key} = {raw!r} is not a valid value.") from None
        return cls(**values)

    def to_node_config(self) -> dict[str, Any]:
        """The node-config entries that state this policy (what a simulation gives its nodes)."""
        out: dict[str, Any] = {self.KEYS["orders"]: ",".join(self.orders),
                               self.KEYS["max_epsilon"]: self.max_epsilon,
                               self.KEYS["max_delta"]: self.max_delta,
                               self.KEYS["nonprivate"]: self.nonprivate,
                               self.KEYS["evaluation_epsilon"]: self.evaluation_epsilon,
                               self.KEYS["secure_mode"]: self.secure_mode}
        if self.noise_seed is not None:
            out[self.KEYS["noise_seed"]] = self.noise_seed
        return out

    def for_client(self, client_seed: int) -> PrivacyPolicy:
        """This policy as the client with pipeline seed ``client_seed`` applies it: its noise
        seed keyed by that client (:func:`client_noise_seed`)."""
        return dataclasses.replace(self, noise_seed=client_noise_seed(self.noise_seed,
                                                                      client_seed))

    def describe(self) -> dict[str, Any]:
        """The policy for a results file (the noise seed only as whether one is set)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "noise_seed"}
        out["orders"] = list(self.orders)
        out["noise_seeded"] = self.noise_seed is not None
        return out

    @classmethod
    def open(cls) -> PrivacyPolicy:
        """Everything allowed (every order, any ε and δ, exact statistics): for experiments in
        which one user holds every client's data."""
        return cls(orders=RELEASES, max_epsilon=math.inf, max_delta=1.0 - 1e-12, nonprivate=True)

    # ------------------------------------------------------------------ checks

    def check_run(self, config: RunConfig) -> None:
        """Raise :class:`PolicyError` if a client under this policy would refuse a run of
        ``config`` (before a simulation starts)."""
        if config.strategy == "oneshot":
            self.check_release(config)
        elif config.strategy == "dp-fedavg":
            self.check_budget(config)
        else:
            self.check_nonprivate(f"{config.strategy} (local training on the real rows)")

    def check_release(self, config: RunConfig) -> None:
        """Raise :class:`PolicyError` unless this client may run ``config``'s release."""
        if config.release not in self.orders:
            raise PolicyError(f"release {config.release!r} is outside this client's privacy policy "
                              f"(allowed: {list(self.orders)}).")
        if config.release in PRIVATE_RELEASES:
            self.check_budget(config)

    def check_budget(self, config: RunConfig) -> None:
        """Raise :class:`PolicyError` unless ``config``'s (ε, δ) is within this client's limits
        (a private release, or DP-FedAvg's whole training)."""
        if config.epsilon > self.max_epsilon:
            raise PolicyError(f"epsilon = {config.epsilon:g} exceeds this client's limit "
                              f"{self.max_epsilon:g}.")
        if config.delta > self.max_delta:
            raise PolicyError(f"delta = {config.delta:g} exceeds this client's limit "
                              f"{self.max_delta:g}.")

    def check_nonprivate(self, what: str) -> None:
        """Raise :class:`PolicyError` unless the handlers without a guarantee may answer."""
        if not self.nonprivate:
            raise PolicyError(f"{what} has no formal privacy guarantee and this client's policy "
                              "does not allow it (privacy-nonprivate = false).")
