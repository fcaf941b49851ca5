r"""DP-FedAvg's local step (sample-level): DP-SGD through Opacus, one accountant for the run.

Each round a client runs ``E`` local epochs of DP-SGD (Abadi et al. 2016) from the global
model: Poisson batches at rate ``q`` (every row joins a batch independently with probability
``q``; Opacus' ``DPDataLoader``), per-sample gradients clipped to norm ``C`` and Gaussian noise
``N(0, σ²C²)`` added to their sum (``GradSampleModule`` and ``DPOptimizer``). One epoch is
``round(1/q)`` steps, so a run of ``R`` rounds is ``T = R·E·round(1/q)`` sampled-Gaussian
steps, and the noise multiplier ``σ`` is the smallest for which the RDP accountant puts all
``T`` of them within the target ``(ε, δ)`` (:class:`common.dp_fedavg.DPSGDPlan`).

What the server may learn. ``q``, ``T``, ``σ`` and the ε spent after ``r`` rounds are
functions of the run configuration alone — never of the client's row count — so the reply
may carry the ε spent, and the model is averaged with equal weights (a weight of ``N_k`` would
give the row count away). The noisy sum is divided by ``q·N̂``, ``N̂`` the run's noisy row
count (drawn once, kept in the node state, never sent).

State across rounds. A ClientApp is rebuilt for every message; the node's ``Context.state``
survives between the messages of a run, and holds this run's plan and the rounds already
trained (:class:`RoundLedger`). A round beyond the plan, or a plan that changed mid-run, is
refused: the server cannot buy more steps than the budget pays for by asking again.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping

import numpy as np

from common import mlp
from common.dp_fedavg import DPSGDPlan
from common.errors import ConfigError, PolicyError

#: The ``Context.state`` record of the run's round count.
STATE_KEY = "dp-fedavg"


class RoundLedger:
    """The rounds a node has trained in this run, kept in its ``Context.state``.

    ``state`` is the context's ``RecordDict``; the plan, the round count and the noisy row
    count live in a ``ConfigRecord`` under :data:`STATE_KEY`.
    """

    def __init__(self, state) -> None:
        self.state = state

    def begin_round(self, plan: DPSGDPlan) -> int:
        """Check that one more round fits the plan; returns the rounds done before it."""
        from flwr.app import ConfigRecord

        record = self.state.get(STATE_KEY) if STATE_KEY in self.state else None
        text = json.dumps(plan.as_dict(), sort_keys=True)
        if record is None:
            self.state[STATE_KEY] = ConfigRecord({"plan": text, "rounds-done": 0})
            return 0
        if str(record["plan"]) != text:
            raise PolicyError("the run's DP-SGD plan changed after its first round; the "
                              "accountant covers one plan per run.")
        done = int(record["rounds-done"])
        if done >= plan.rounds:
            raise PolicyError(f"this run's DP-SGD budget is spent: {done} of {plan.rounds} "
                              "planned rounds done.")
        return done

    def row_count(self, plan: DPSGDPlan, n: int, noise) -> float:
        """The run's noisy row count ``max(1, n + N(0, σ_n²))``: drawn from ``noise`` (a
        :class:`common.privacy.NoiseSource`) in the first round, read back afterwards."""
        record = self.state[STATE_KEY]
        if "n-hat" not in record:
            record["n-hat"] = max(1.0, float(n + noise.normal(0.0, plan.count_noise)))
        return float(record["n-hat"])

    def end_round(self) -> int:
        """Count the round just trained; returns the rounds done."""
        record = self.state[STATE_KEY]
        record["rounds-done"] = int(record["rounds-done"]) + 1
        return int(record["rounds-done"])


def train(params: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray, *, plan: DPSGDPlan,
          expected_batch_size: float, lr: float, l2: float, seed: int,
          secure_mode: bool = False) -> dict[str, np.ndarray]:
    """One round of DP-SGD from ``params`` (``plan.steps_per_round`` steps); new arrays.

    ``expected_batch_size`` divides the noisy gradient sum: ``q·N̂`` with a DP row count
    (:meth:`RoundLedger.row_count`), not the true ``q·N``.
    ``seed`` seeds the Poisson batches and Opacus' noise (draw it from a
    :class:`common.privacy.NoiseSource`: fresh unless the client seeded its noise);
    ``secure_mode`` is Opacus' hardened noise. ``l2`` is weight decay, applied after the
    noise (it reads no data).
    """
    import torch
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizer

    if len(X) == 0:
        raise ConfigError("cannot train a model on zero rows.")
    layers = mlp.layers(params)
    modules: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w))
            if b is not None:
                lin.bias.copy_(torch.as_tensor(b))
        modules.append(lin)
        if i < len(layers) - 1:
            modules.append(torch.nn.ReLU())
    net = GradSampleModule(torch.nn.Sequential(*modules))
    # The batches always come from this seeded generator (torch's global one starts from a
    # fixed seed, which anyone could replay); in secure mode Opacus draws the noise itself.
    gen = torch.Generator().manual_seed(int(seed))
    optimizer = DPOptimizer(torch.optim.SGD(net.parameters(), lr=lr, weight_decay=l2),
                            noise_multiplier=plan.noise_multiplier,
                            max_grad_norm=plan.max_grad_norm,
                            expected_batch_size=max(1, int(round(expected_batch_size))),
                            loss_reduction="mean", generator=None if secure_mode else gen,
                            secure_mode=secure_mode)
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(np.asarray(X, np.float64)),
                                             torch.as_tensor(np.asarray(y, np.float64)))
    loader = DPDataLoader(dataset, sample_rate=plan.sample_rate, generator=gen)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="mean")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is the fastest (see common.mlp.train)
    steps = 0
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure.*RNG.*")
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            while steps < plan.steps_per_round:
                for xb, yb in loader:
                    optimizer.zero_grad(set_to_none=True)
                    if len(xb):
                        loss_fn(net(xb)[:, 0], yb).backward()
                    else:  # an empty Poisson batch: the step is the noise alone
                        for p in net.parameters():
                            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                    optimizer.step()
                    steps += 1
                    if steps == plan.steps_per_round:
                        break
    finally:
        torch.set_num_threads(threads)
    out = {}
    linear = [m for m in net._module if isinstance(m, torch.nn.Linear)]
    for i, lin in enumerate(linear):
        out[f"layer{i}.weight"] = lin.weight.detach().numpy().copy()
        if lin.bias is not None:
            out[f"layer{i}.bias"] = lin.bias.detach().numpy().copy()
    return out
