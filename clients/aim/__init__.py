r"""AIM, an adaptive and iterative mechanism for DP synthetic data (stage 2, ``--generator aim``).

McKenna, Mullins, Sheldon & Miklau, "AIM: An Adaptive and Iterative Mechanism for
Differentially Private Synthetic Data", PVLDB 15(11), 2022. The rows are first put on a finite
domain read off the public schema (:mod:`~clients.aim.discretise`). AIM then spends a
``ρ``-zCDP budget (:mod:`~clients.aim.budget`) on noisy marginals:

1. **Initialise.** Measure every 1-way marginal with the Gaussian mechanism and fit a
   graphical model to them (:mod:`~clients.aim.graphical`).
2. **Select.** Among the candidates — every subset of a workload marginal, weighted by its
   overlap ``w_r`` with the workload — that keep the model under a size limit growing with the
   budget spent, pick one with the exponential mechanism on the quality
   ``w_r (‖M_r(D) − M_r(p̂)‖₁ − \sqrt{2/π}·σ·n_r)``: its estimated error minus the error its
   noisy measurement is expected to leave (sensitivity ``max_r w_r``).
3. **Measure** it with Gaussian noise ``σ``, re-fit the model (warm-started), and **anneal**:
   if the model's answer moved by less than the measurement's expected noise, halve ``σ`` and
   double the selection's ``ε``. Repeat 2–3 until the budget is spent, the last round with all
   that is left.
4. **Generate.** Rows drawn from the final model, decoded to values (post-processing).

Modules: :mod:`~clients.aim.config` (options), :mod:`~clients.aim.discretise` (the public
domain), :mod:`~clients.aim.budget` (the zCDP schedule), :mod:`~clients.aim.graphical` (the
graphical model: estimation, marginals, sampling) and :mod:`~clients.aim.mechanism`
(:class:`AIM`: workload, selection, fit, sample).
"""

from clients.aim.config import WORKLOADS, AIMConfig
from clients.aim.mechanism import AIM

#: The package's interface; the parts live in the submodules named above.
__all__ = ["AIM", "WORKLOADS", "AIMConfig"]
