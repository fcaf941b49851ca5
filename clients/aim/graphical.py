r"""The graphical model AIM estimates from its noisy marginals (Private-PGM, in numpy).

Private-PGM (McKenna, Sheldon & Miklau, ICML 2019) finds the distribution that best explains a
set of noisy marginals ``y_c = μ_c(D) + N(0, σ_c²)``: among all tables with the estimated
total, the one minimising

.. math::

    L(\mu) = \tfrac12 \sum_c \bigl\lVert (\mu_c - y_c) / \sigma_c \bigr\rVert_2^2 ,

which has the form of a Markov random field ``p(x) ∝ exp(Σ_C θ_C(x_C))`` over the maximal
measured cliques ``C``. Its marginals are computed exactly by belief propagation on a junction
tree of those cliques, and ``θ`` is found by entropic mirror descent on the marginal polytope
(the paper's Algorithm 1, with its Armijo step rule: the step grows by 1 % after a sufficient
decrease and halves otherwise, starting from ``2 / (L · total)``, ``L`` the Lipschitz constant
of ``∇L``). Everything here is post-processing of the noisy marginals: it never sees a row.

This mirrors ``mbi`` 2.0's ``MirrorDescent`` with its junction-tree oracle (which the tests
check it against); it is written in numpy because ``mbi`` compiles each new model structure
with XLA, which on a CPU costs 3–16 s per AIM round and about 1 s per new marginal queried,
against milliseconds here (docs/method.md, AIM).

Cliques are tuples of attribute names in the domain's order throughout, so that a table over
a sub-clique lines up with a table over its super-clique by reshaping alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import networkx as nx
import numpy as np

Clique = tuple[str, ...]


def canonical(attrs, order: Sequence[str]) -> Clique:
    """``attrs`` as a tuple in the domain's ``order``."""
    attrs = set(attrs)
    return tuple(a for a in order if a in attrs)


def maximal(cliques: Sequence[Clique]) -> list[Clique]:
    """The cliques that are no other clique's strict subset (duplicates once, order kept)."""
    out: list[Clique] = []
    for cl in dict.fromkeys(cliques):
        if not any(set(cl) < set(other) for other in cliques):
            out.append(cl)
    return out


def _align(table: np.ndarray, sub: Clique, sup: Clique, sizes: dict) -> np.ndarray:
    """A table over ``sub`` reshaped to broadcast over ``sup`` (``sub ⊆ sup``, both ordered)."""
    return table.reshape([sizes[a] if a in sub else 1 for a in sup])


def _sum_to(table: np.ndarray, attrs: Clique, keep: Clique) -> np.ndarray:
    axes = tuple(i for i, a in enumerate(attrs) if a not in keep)
    return table.sum(axis=axes) if axes else table


def _axes(attrs: Clique, keep: Clique) -> tuple[int, ...]:
    """The axes of a table over ``attrs`` that summing it down to ``keep`` removes."""
    return tuple(i for i, a in enumerate(attrs) if a not in keep)


def _logsumexp(table: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``log Σ exp`` over ``axes``. Not ``scipy.special.logsumexp``, which gives the same
    values: its argument handling costs about 80 µs a call against 8–12 µs here, and belief
    propagation makes about 400,000 of these calls in one AIM fit on Adult."""
    if not axes:
        return table
    top = table.max(axis=axes, keepdims=True)
    return np.log(np.exp(table - top).sum(axis=axes)) + np.squeeze(top, axis=axes)


def _logsumexp_to(table: np.ndarray, attrs: Clique, keep: Clique) -> np.ndarray:
    return _logsumexp(table, _axes(attrs, keep))


def junction_tree(sizes: dict, cliques: Sequence[Clique]) -> tuple[list[Clique], list]:
    """Maximal cliques of a triangulation of the cliques' graph and the tree's edges.

    The elimination order is greedy (each step eliminates the attribute whose neighbourhood has
    the fewest cells), as ``mbi.junction_tree.greedy_order``; the tree is a maximum spanning
    tree with the separators' sizes as weights (a forest when the graph is disconnected).
    """
    order = list(sizes)
    graph = nx.Graph()
    graph.add_nodes_from(order)
    for cl in cliques:
        graph.add_edges_from(itertools.combinations(cl, 2))
    # Eliminating ``a`` joins its neighbours into one clique, so the union of the working
    # cliques that hold ``a`` is always ``a`` and its neighbours in the elimination graph: the
    # greedy step's cost is read from the adjacency (O(degree)) rather than from every clique.
    adjacency = {a: set(graph.adj[a]) for a in order}
    remaining, fill = list(order), set()
    while remaining:
        a = min(remaining, key=lambda a: sizes[a] * math.prod(sizes[b] for b in adjacency[a]))
        remaining.remove(a)
        neighbours = adjacency.pop(a)
        for b in neighbours:
            adjacency[b].discard(a)
            adjacency[b] |= neighbours - {b}
        fill |= set(itertools.combinations(neighbours, 2))
    graph.add_edges_from(fill)
    nodes = sorted(canonical(c, order) for c in nx.find_cliques(graph))
    complete = nx.Graph()
    complete.add_nodes_from(range(len(nodes)))
    for i, j in itertools.combinations(range(len(nodes)), 2):
        shared = len(set(nodes[i]) & set(nodes[j]))
        if shared:
            complete.add_edge(i, j, weight=-shared)
    tree = nx.minimum_spanning_tree(complete)
    return nodes, sorted(tree.edges())


def model_size(sizes: dict, cliques: Sequence[Clique]) -> float:
    """Megabytes of a model over ``cliques``: 8 bytes per cell of its junction tree's cliques
    (the paper's size measure, ``mbi.junction_tree.hypothetical_model_size``)."""
    nodes, _ = junction_tree(sizes, cliques)
    return sum(int(np.prod([sizes[a] for a in cl])) for cl in nodes) * 8 / 2**20


class GraphicalModel:
    """A Markov random field over ``cliques`` (potentials on their maximal ones) with ``total``
    rows; :meth:`calibrate` computes its clique marginals by belief propagation."""

    def __init__(self, sizes: dict, cliques: Sequence[Clique], total: float):
        self.sizes = dict(sizes)
        self.order = list(sizes)
        self.cliques = maximal([canonical(c, self.order) for c in cliques])
        self.total = float(total)
        self.nodes, edges = junction_tree(self.sizes, self.cliques)
        self._cells: dict[Clique, int | None] = {}
        self.home = {cl: self.cell(cl) for cl in self.cliques}  # tree node of each potential
        self.neighbours: dict[int, list[int]] = {i: [] for i in range(len(self.nodes))}
        for i, j in edges:
            self.neighbours[i].append(j)
            self.neighbours[j].append(i)
        self.separator = {(i, j): canonical(set(self.nodes[i]) & set(self.nodes[j]), self.order)
                          for i in self.neighbours for j in self.neighbours[i]}
        # message schedule: per component, leaves to root, then root to leaves
        tree = nx.Graph()
        tree.add_nodes_from(range(len(self.nodes)))
        tree.add_edges_from(edges)
        self.components, up = [], []
        for comp in nx.connected_components(tree):
            root = min(comp)
            parent = nx.dfs_predecessors(tree, root)
            self.components.append((root, sorted(comp)))
            up += [(i, parent[i]) for i in nx.dfs_postorder_nodes(tree, root) if i != root]
        self.schedule = up + [(j, i) for i, j in reversed(up)]
        # Belief propagation repeats the same reshapes and reductions at every mirror-descent
        # step: their shapes and axes are fixed by the tree, so they are worked out once here.
        self._home_shape = {cl: [self.sizes[a] if a in cl else 1 for a in self.nodes[i]]
                            for cl, i in self.home.items()}
        self._out_axes = {e: _axes(self.nodes[e[0]], sep) for e, sep in self.separator.items()}
        self._in_shape = {(k, i): [self.sizes[a] if a in sep else 1 for a in self.nodes[i]]
                          for (k, i), sep in self.separator.items()}
        self.log_beliefs: list[np.ndarray] = []
        self.potentials = {cl: np.zeros([self.sizes[a] for a in cl]) for cl in self.cliques}
        self._cache: dict[Clique, np.ndarray] = {}
        self._plans: dict[tuple[Clique, ...], list] = {}

    def cell(self, clique: Clique) -> int | None:
        """Index of the smallest tree node holding ``clique`` (None if no node does); the tree
        is fixed, so the answer is kept (mirror descent asks it for every measurement at every
        step)."""
        if clique not in self._cells:
            holding = [i for i, n in enumerate(self.nodes) if set(clique) <= set(n)]
            self._cells[clique] = min(holding, default=None, key=lambda i: math.prod(
                self.sizes[a] for a in self.nodes[i]))
        return self._cells[clique]

    def _shape(self, cl: Clique) -> list[int]:
        return [self.sizes[a] for a in cl]

    def calibrate(self, potentials: dict | None = None) -> GraphicalModel:
        """Belief propagation (log space) with ``potentials`` over :attr:`cliques`; afterwards
        :meth:`project` answers any marginal, scaled to :attr:`total`."""
        if potentials is not None:
            self.potentials = potentials
        psi = [np.zeros(self._shape(n)) for n in self.nodes]
        for cl, theta in self.potentials.items():
            i = self.home[cl]
            psi[i] = psi[i] + theta.reshape(self._home_shape[cl])
        messages: dict[tuple[int, int], np.ndarray] = {}

        def incoming(i: int, skip: int | None = None) -> np.ndarray:
            table = psi[i]
            for k in self.neighbours[i]:
                if k != skip:
                    table = table + messages[(k, i)].reshape(self._in_shape[(k, i)])
            return table

        for i, j in self.schedule:
            messages[(i, j)] = _logsumexp(incoming(i, skip=j), self._out_axes[(i, j)])
        beliefs = [incoming(i) for i in range(len(self.nodes))]
        log_total = np.log(self.total)
        for _, comp in self.components:
            z = _logsumexp(beliefs[comp[0]], tuple(range(beliefs[comp[0]].ndim)))
            for i in comp:
                beliefs[i] = beliefs[i] - z + log_total
        self.log_beliefs = beliefs
        self._cache = {}
        return self

    def marginals(self, cliques: Sequence[Clique]) -> np.ndarray:
        """The marginal tables over ``cliques`` (each held by a tree node, in the domain's
        order), flattened and concatenated: what mirror descent compares with the
        measurements at every step, with one ``exp`` per tree node rather than per clique."""
        key = tuple(cliques)
        if key not in self._plans:
            self._plans[key] = [(self.cell(cl), _axes(self.nodes[self.cell(cl)], cl))
                                for cl in cliques]
        probs: dict[int, np.ndarray] = {}
        out = []
        for i, axes in self._plans[key]:
            if i not in probs:
                probs[i] = np.exp(self.log_beliefs[i])
            out.append((probs[i].sum(axis=axes) if axes else probs[i]).ravel())
        return np.concatenate(out)

    def project(self, clique: Clique) -> np.ndarray:
        """The model's marginal table over ``clique`` (counts summing to :attr:`total`)."""
        clique = canonical(clique, self.order)
        if clique in self._cache:
            return self._cache[clique]
        i = self.cell(clique)
        if i is not None:
            out = _sum_to(np.exp(self.log_beliefs[i]), self.nodes[i], clique)
        else:
            out = self._eliminate(clique)
        self._cache[clique] = out
        return out

    def _eliminate(self, clique: Clique) -> np.ndarray:
        """A marginal no tree node holds: the tree pruned to the nodes it needs, factorised as
        ``Π μ_node / Π μ_separator``, and variable elimination on that product (log space)."""
        keep = set(range(len(self.nodes)))
        target = set(clique)
        pruned = True
        while pruned:
            pruned = False
            for i in list(keep):
                links = [j for j in self.neighbours[i] if j in keep]
                if len(links) > 1:
                    continue
                own = set(self.nodes[i]) - (set(self.separator[(i, links[0])]) if links else set())
                if not own & target and (links or len(keep) > 1):
                    keep.discard(i)
                    pruned = True
        factors = [(self.nodes[i], self.log_beliefs[i]) for i in keep]
        for i, j in self.separator:
            if i < j and i in keep and j in keep:
                sep = self.separator[(i, j)]
                factors.append((sep, -_logsumexp_to(self.log_beliefs[i], self.nodes[i], sep)))
        variables = set().union(*[set(a) for a, _ in factors]) - target
        while variables:
            v = min(sorted(variables), key=lambda v, factors=factors: int(np.prod(
                [self.sizes[b] for b in set().union(*[set(a) for a, _ in factors if v in a])])))
            variables.discard(v)
            touching = [f for f in factors if v in f[0]]
            factors = [f for f in factors if v not in f[0]]
            scope = canonical(set().union(*[set(a) for a, _ in touching]), self.order)
            table = sum(_align(t, a, scope, self.sizes) for a, t in touching)
            kept = tuple(a for a in scope if a != v)
            factors.append((kept, _logsumexp_to(table, scope, kept)))
        table = sum(_align(t, a, clique, self.sizes) for a, t in factors)
        table = np.broadcast_to(table, self._shape(clique))
        table = np.exp(table - table.max())
        return table * (self.total / table.sum())


def estimate(sizes: dict, measurements: Sequence[tuple[Clique, np.ndarray, float]], *,
             total: float, iters: int, warm_start: GraphicalModel | None = None
             ) -> GraphicalModel:
    """The graphical model that best explains ``measurements`` (``(clique, noisy table, σ)``)
    with ``total`` rows: ``iters`` steps of mirror descent, from ``warm_start``'s potentials
    (each lies inside one of the new maximal cliques) or from the uniform table."""
    order = list(sizes)
    meas = [(canonical(c, order), np.asarray(y, dtype=np.float64).reshape(
        [sizes[a] for a in canonical(c, order)]), float(s)) for c, y, s in measurements]
    model = GraphicalModel(sizes, [c for c, _, _ in meas], total)
    home = {c: next(m for m in model.cliques if set(c) <= set(m)) for c, _, _ in meas}
    theta = {cl: np.zeros(model._shape(cl)) for cl in model.cliques}
    if warm_start is not None:
        for cl, table in warm_start.potentials.items():
            big = next(m for m in model.cliques if set(cl) <= set(m))
            theta[big] = theta[big] + _align(table, cl, big, sizes)
    lipschitz: dict[Clique, float] = {}
    for c, _, s in meas:
        ratio = np.prod(model._shape(home[c])) / np.prod(model._shape(c))
        lipschitz[home[c]] = lipschitz.get(home[c], 0.0) + ratio / max(s, 1e-12) ** 2
    alpha = 2.0 / (max(lipschitz.values()) * total)
    # The measurements as one vector: the loss, its gradient and the Armijo test are then a
    # few vector operations per step, whatever the number of measurements.
    cliques = [c for c, _, _ in meas]
    y = np.concatenate([t.ravel() for _, t, _ in meas])
    sigma = np.concatenate([np.full(t.size, s) for _, t, s in meas])
    ends = np.cumsum([t.size for _, t, _ in meas])
    spans = [(start, end, [sizes[a] if a in c else 1 for a in home[c]], home[c])
             for start, end, c in zip([0, *ends[:-1]], ends, cliques)]

    def evaluate(th):
        marg = model.calibrate(th).marginals(cliques)
        return 0.5 * float(np.sum(((marg - y) / sigma) ** 2)), marg

    loss, marg = evaluate(theta)
    for _ in range(iters):
        grad = (marg - y) / sigma**2
        step = {cl: t.copy() for cl, t in theta.items()}
        for start, end, shape, big in spans:
            step[big] -= alpha * grad[start:end].reshape(shape)
        loss2, marg2 = evaluate(step)
        if loss - loss2 >= 0.5 * alpha * float(grad @ (marg - marg2)):
            theta, loss, marg, alpha = step, loss2, marg2, 1.01 * alpha
        else:
            alpha *= 0.5
    return model.calibrate(theta)


def largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    """``n`` split in proportion to ``p``: floors, then one more to the largest remainders."""
    share = n * p / p.sum()
    counts = np.floor(share).astype(np.int64)
    extra = n - int(counts.sum())
    if extra > 0:
        counts[np.argsort(-(share - counts), kind="stable")[:extra]] += 1
    return counts


def sample(model: GraphicalModel, n: int, rng: np.random.Generator, *,
           first: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """``n`` rows of codes drawn from ``model`` along its junction tree.

    In every component the root (the node holding most of ``first``) gets its cells in exact
    proportions (largest remainder, shuffled); each other node draws its own attributes given
    the separator's, from the model's conditional. Post-processing of the model.
    """
    tree = nx.Graph()
    tree.add_nodes_from(range(len(model.nodes)))
    for i, js in model.neighbours.items():
        tree.add_edges_from((i, j) for j in js)
    codes: dict[str, np.ndarray] = {}
    for _, comp in model.components:
        root = max(comp, key=lambda i: (len(set(first) & set(model.nodes[i])), -i))
        node = model.nodes[root]
        p = np.exp(model.log_beliefs[root]).ravel()
        cells = np.repeat(np.arange(p.size), largest_remainder(p, n))
        rng.shuffle(cells)
        for a, c in zip(node, np.unravel_index(cells, model._shape(node))):
            codes[a] = c
        for parent, child in nx.bfs_edges(tree, root):
            node, sep = model.nodes[child], model.separator[(parent, child)]
            new = tuple(a for a in node if a not in sep)
            table = np.exp(model.log_beliefs[child])
            table = np.transpose(table, [node.index(a) for a in sep + new])
            table = table.reshape(int(np.prod(model._shape(sep))), -1)
            mass = table.sum(axis=1, keepdims=True)
            cond = np.where(mass > 0, table / np.where(mass > 0, mass, 1.0), 1.0 / table.shape[1])
            cdf = np.cumsum(cond, axis=1)
            row = np.ravel_multi_index([codes[a] for a in sep], model._shape(sep))
            u = rng.random(n)
            pick = np.empty(n, dtype=np.int64)
            for start in range(0, n, 4096):
                part = slice(start, start + 4096)
                pick[part] = (cdf[row[part]] < u[part, None]).sum(axis=1)
            pick = np.minimum(pick, cdf.shape[1] - 1)
            for a, c in zip(new, np.unravel_index(pick, model._shape(new))):
                codes[a] = c
    return codes
