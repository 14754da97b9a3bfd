"""Which candidate motions become parts: multi-model fitting as facility location, with re-estimation.

The clients are the pieces of motion evidence of both states: canonical samples where the other state sees empty
space, and the other state's samples where the canonical one does; the static body serves none of them (that is
what makes them evidence). A motion T serves a canonical client x when it *lands* it: T x lies within the tolerance
of a sample of the other state that is

- not the static body's (a surface both states show in place), and
- not already explained by another open motion (one surface is explained once: a door's inner face flipped onto the
  closed door's front lands, but the door's own motion explains that front already).

The other state's clients are served alike by T^-1. A motion that only hides evidence (moves it behind what the
other state shows) serves nothing: hidden surfaces carry no evidence, and the labelling (`parts.labelling`) gives
them to the part around them.

Opening a motion costs `open_cost` clients: one more part must pay for itself in explained surface, a
minimum-description-length criterion (Lazic et al., "FLoSS: Facility Location for Subspace Segmentation", ICCV 2009;
Isack and Boykov, "Energy-based geometric multi-model fitting", IJCV 2012). `greedy` opens, one at a time, the motion
serving most clients not yet served while that exceeds the opening cost (or until a requested count), then closes
open motions that others have made redundant. `Selector.run` alternates that with re-estimation: each open motion is
refitted by symmetric ICP on the clients it serves and the refit joins the candidates, until the open set stops
changing. Last, open motions that another serves almost as well are merged (`merge_alike`). Motions closer than the
landing tolerance (two drawers pulled out alike) look the same here; `parts.refine` splits them later.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parts.motion import Side, fit_coarse_to_fine, invert
from parts.samples import Samples
from utils.neighbours import query
from utils.rigid_fit import apply_transform

ROUNDS = 4  # re-estimation rounds at most


@dataclass
class Landings:
    """Where candidate motions put the clients: for each motion (H) and client (E), the index of the sample of the
    state the client lands in (-1: it lands on none, or on the static body)."""

    target: np.ndarray  # (H, E) int64
    side: np.ndarray  # (E,) 0 for canonical clients (targets: the other state's samples), 1 for the other's
    own: np.ndarray  # (E,) each client's own sample in its state
    sizes: tuple[int, int]  # samples of the canonical and the other state

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class Selection:
    """The open motions, the clients each serves (E,) (-1: none) and each one's share."""

    motions: list[np.ndarray]
    owner: np.ndarray
    served: np.ndarray  # (K,) clients each serves


def greedy(landings: Landings, open_cost: float, need: int | None = None) -> tuple[list[int], np.ndarray]:
    """Rows of `landings` to open (see the module docstring) and the row serving each client (-1: none). With `need`,
    that many when the candidates allow (the opening cost then only orders them)."""
    target, side, own = landings.target, landings.side, landings.own
    taken = [np.zeros(n, dtype=bool) for n in landings.sizes]  # samples explained so far, per state
    owner = np.full(target.shape[1], -1)
    chosen: list[int] = []
    limit = need if need is not None else len(target)
    while len(chosen) < limit:
        valid = (target >= 0) & (owner < 0)[None]
        for s in (0, 1):
            cols = side == s
            valid[:, cols] &= ~taken[1 - s][np.maximum(target[:, cols], 0)]
        gains = valid.sum(axis=1)
        gains[chosen] = -1
        best = int(np.argmax(gains))
        if gains[best] <= (0 if need is not None else open_cost):
            break
        chosen.append(best)
        owner[valid[best]] = best
        for s in (0, 1):
            cols = valid[best] & (side == s)
            taken[1 - s][target[best, cols]] = True
            taken[s][own[cols]] = True
    if need is None:
        chosen = _close_redundant(landings, chosen, owner, open_cost)
        owner = np.where(np.isin(owner, chosen), owner, -1)
    return chosen, owner


def _close_redundant(landings: Landings, chosen: list[int], owner: np.ndarray, open_cost: float) -> list[int]:
    """`chosen` without the motions whose own clients, less those another open motion also lands, number fewer than
    `open_cost` (weakest first, one at a time): a motion opened early can be made redundant by later ones."""
    chosen = list(chosen)
    lands = landings.target >= 0
    while len(chosen) > 1:
        alone = [np.sum((owner == k) & ~lands[[c for c in chosen if c != k]].any(axis=0)) for k in chosen]
        weakest = int(np.argmin(alone))
        if alone[weakest] >= open_cost:
            break
        del chosen[weakest]
    return chosen


class Selector:
    """Selection with re-estimation over fixed clients (see the module docstring)."""

    def __init__(self, clients_c: np.ndarray, samples_c: Samples, static_c: np.ndarray, clients_o: np.ndarray,
                 samples_o: Samples, static_o: np.ndarray, tolerance: float, open_cost: float,
                 max_fit_points: int = 1500, seed: int = 0) -> None:
        """Clients as indices into each state's samples (E_c,), (E_o,); each state's `Samples` and
        which of them (bool (S,)) the static body explains."""
        self.own = np.concatenate([clients_c, clients_o])
        self.sides_c, self.sides_o = samples_c.sides[clients_c], samples_o.sides[clients_o]
        clients_c, clients_o = samples_c.points[clients_c], samples_o.points[clients_o]
        self.clients_c, self.clients_o = clients_c, clients_o
        self.samples_c, self.samples_o = samples_c, samples_o
        self.static_c, self.static_o = static_c, static_o
        self.tolerance, self.open_cost = tolerance, open_cost
        self.max_fit_points = max_fit_points
        self.rng = np.random.default_rng(seed)
        self.side = np.concatenate([np.zeros(len(clients_c), dtype=np.int64), np.ones(len(clients_o), np.int64)])

    def _landing(self, points: np.ndarray, sides: np.ndarray, samples: Samples, static: np.ndarray) -> np.ndarray:
        """(N,) the sample of `samples` each of `points` seen from `sides` lands on (-1: none, or a static one)."""
        index = samples.landing(points, self.tolerance, sides)
        return np.where((index >= 0) & ~static[np.maximum(index, 0)], index, -1)

    def landings(self, motions: list[np.ndarray]) -> Landings:
        """Where `motions` (c -> o) put every client."""
        rows = [np.concatenate([self._landing(apply_transform(T, self.clients_c), self.sides_c @ T[:3, :3].T,
                                              self.samples_o, self.static_o),
                                self._landing(apply_transform(invert(T), self.clients_o), self.sides_o @ T[:3, :3],
                                              self.samples_c, self.static_c)]) for T in motions]
        return self._landings(np.array(rows, dtype=np.int64).reshape(len(motions), len(self.side)))

    def _landings(self, target: np.ndarray) -> Landings:
        return Landings(target, self.side, self.own, (len(self.samples_c.points), len(self.samples_o.points)))

    def refit(self, T: np.ndarray, served: np.ndarray) -> np.ndarray:
        """T refitted by symmetric rigid ICP on the clients it serves (`served` (E,) bool)."""
        n_c = len(self.clients_c)
        forward, backward = self._sample(self.clients_c[served[:n_c]]), self._sample(self.clients_o[served[n_c:]])
        if len(forward) < 3:
            return T
        return fit_coarse_to_fine(T, "rigid", Side(forward, self.samples_o.surface.tree),
                                  Side(backward, self.samples_c.surface.tree), self.tolerance)

    def continuous_costs(self, T: np.ndarray, served: np.ndarray) -> np.ndarray:
        """(n,) min(1, (d / tol)^2) of the landing distances under T of the clients `served` (E,) bool."""
        n_c = len(self.clients_c)
        d = np.concatenate([
            query(self.samples_o.surface.tree, apply_transform(T, self.clients_c[served[:n_c]]),
                  distance_upper_bound=self.tolerance)[0],
            query(self.samples_c.surface.tree, apply_transform(invert(T), self.clients_o[served[n_c:]]),
                  distance_upper_bound=self.tolerance)[0]])
        return np.where(np.isfinite(d), (d / self.tolerance) ** 2, 1.0)

    def merge_alike(self, motions: list[np.ndarray], chosen: list[int], owner: np.ndarray
                    ) -> tuple[list[int], np.ndarray]:
        """Close open motions whose clients another open motion serves almost as well (their continuous cost rises by
        less than the opening cost), smallest first; their clients go to it. Landing counts cannot tell two motions
        within the tolerance apart, so both may have been opened for one part."""
        chosen = list(chosen)
        merged = True
        while merged and len(chosen) > 1:
            merged = False
            for k in sorted(chosen, key=lambda c: np.sum(owner == c)):
                served = owner == k
                own = self.continuous_costs(motions[k], served).sum()
                rises = {j: self.continuous_costs(motions[j], served).sum() - own for j in chosen if j != k}
                j = min(rises, key=rises.get)
                if rises[j] < self.open_cost:
                    owner = np.where(served, j, owner)
                    chosen.remove(k)
                    merged = True
                    break
        return chosen, owner

    def _sample(self, points: np.ndarray) -> np.ndarray:
        if len(points) <= self.max_fit_points:
            return points
        return points[self.rng.choice(len(points), self.max_fit_points, replace=False)]

    def run(self, candidates: list[np.ndarray], need: int | None = None) -> Selection:
        """Open motions among `candidates` and their refits (see the module docstring)."""
        motions = list(candidates)
        landings = self.landings(motions)
        chosen, owner = greedy(landings, self.open_cost, need)
        for _ in range(ROUNDS):
            new = [self.refit(motions[k], owner == k) for k in chosen]
            motions += new
            landings = self._landings(np.concatenate([landings.target, self.landings(new).target]))
            again, owner = greedy(landings, self.open_cost, need)
            if sorted(again) == sorted(chosen):
                break
            chosen = again
        chosen, owner = self.merge_alike(motions, chosen, owner)
        index = {k: i for i, k in enumerate(chosen)}
        owner = np.array([index.get(k, -1) for k in owner]) if len(owner) else owner
        return Selection([motions[k] for k in chosen], owner, np.array([np.sum(owner == i) for i in range(len(chosen))]))
