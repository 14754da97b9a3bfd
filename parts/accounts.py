"""The whole labelling's cost, part by part: what model selection weighs when a part is given up.

Each part explains its canonical samples under its motion by what the other state shows where they land
(`Observation.costs`). One surface of the other state explains one part: a landing on a surface that the static body
explains, or that another part claims (moved back by that part's motion, the surface lands on that part's samples;
the closest landing wins), counts as hidden. Giving a part up — to a touching part's motion or to the static body —
changes the cost of its own samples, saves one opening cost, and frees its claims, which the other parts may then
explain. The change of the total is what decides, so a fragment that steals a neighbour's surface with a spurious
motion is weighed with the neighbour's loss, not only its own gain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from parts.observation import HIDDEN_COST


@dataclass(frozen=True)
class Landing:
    """A part's samples under one motion: their costs (N,) ignoring claims, and the other state's sample each lands
    on (N,) (-1: none)."""

    raw: np.ndarray
    target: np.ndarray

    def __add__(self, other: "Landing") -> "Landing":
        return Landing(np.concatenate([self.raw, other.raw]), np.concatenate([self.target, other.target]))


def owners(distances: np.ndarray, reach: float) -> np.ndarray:
    """(S_o,) the part (1-based; 0: none) of least distance within `reach` among the rows of `distances` (K, S_o)."""
    if len(distances) == 0:
        return np.zeros(distances.shape[1], dtype=np.int64)
    best = np.argmin(distances, axis=0)
    return np.where(distances[best, np.arange(distances.shape[1])] <= reach, best + 1, 0)


def claimed_cost(landing: Landing, claim: np.ndarray, owner: int, static_o: np.ndarray) -> np.ndarray:
    """(N,) the costs of `landing` for part `owner` (1-based): raised to the hidden cost where a sample lands on a
    surface the static body explains (`static_o`, (S_o,) bool) or that another part claims (`claim`, (S_o,))."""
    hit = landing.target >= 0
    target = landing.target[hit]
    taken = np.zeros(len(hit), dtype=bool)
    taken[hit] = ((claim[target] > 0) & (claim[target] != owner)) | static_o[target]
    return np.where(taken, np.maximum(landing.raw, HIDDEN_COST), landing.raw)


class Accounts:
    """The parts' regions (canonical sample indices) and motions with their landings and claim distances.

    `land(T, index)` gives the `Landing` of the canonical samples `index` under motion T; `distances(T, index)` the
    (S_o,) distance from each of the other state's samples, moved back by T, to the samples `index` (inf beyond the
    claim reach); `body_costs` (S,) what each canonical sample costs the static body."""

    def __init__(self, regions: list[np.ndarray], motions: list[np.ndarray],
                 land: Callable[[np.ndarray, np.ndarray], Landing],
                 distances: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 static_o: np.ndarray, body_costs: np.ndarray, open_cost: float, reach: float) -> None:
        self.land, self.distances = land, distances
        self.static_o, self.body_costs, self.open_cost, self.reach = static_o, body_costs, open_cost, reach
        self.regions, self.motions = list(regions), list(motions)
        self.landings = [land(T, r) for T, r in zip(self.motions, self.regions)]
        self.dist = np.stack([distances(T, r) for T, r in zip(self.motions, self.regions)]) if regions \
            else np.zeros((0, len(static_o)))
        self._keys = list(range(len(self.regions)))  # one per region as it is now: what `_moved` caches by
        self._cache: dict[tuple[int, int], tuple[Landing, np.ndarray]] = {}
        self._joins: dict[tuple[int, int], tuple[Landing, np.ndarray]] = {}  # by `pair`: one union motion per pair
        self._now: float | None = None

    def total(self, landings: list[Landing] | None = None, dist: np.ndarray | None = None) -> float:
        """The parts' total cost: their samples' claimed costs plus one opening cost each."""
        landings = self.landings if landings is None else landings
        claim = owners(self.dist if dist is None else dist, self.reach)
        return float(sum(claimed_cost(landing, claim, k, self.static_o).sum()
                         for k, landing in enumerate(landings, start=1)) + self.open_cost * len(landings))

    def _given(self, i: int, host: int) -> tuple[list[Landing], np.ndarray, float]:
        """Landings, claim distances and body cost once part i is given to part `host` (-1: the static body)."""
        landings, dist, body = list(self.landings), self.dist.copy(), 0.0
        if host < 0:
            body = float(self.body_costs[self.regions[i]].sum())
        else:
            landing, distances = self._moved(i, host)
            landings[host] = landings[host] + landing
            dist[host] = np.minimum(dist[host], distances)
        del landings[i]
        return landings, np.delete(dist, i, axis=0), body

    def _moved(self, i: int, host: int) -> tuple[Landing, np.ndarray]:
        """Part i's samples under the motion of part `host`: their landing and claim distances (cached)."""
        key = (self._keys[i], self._keys[host])
        if key not in self._cache:
            T = self.motions[host]
            self._cache[key] = (self.land(T, self.regions[i]), self.distances(T, self.regions[i]))
        return self._cache[key]

    def change(self, i: int, host: int) -> float:
        """How the total (the static body's share included) changes when part i is given to `host` (-1: body)."""
        if self._now is None:
            self._now = self.total()
        landings, dist, body = self._given(i, host)
        return self.total(landings, dist) + body - self._now

    def pair(self, i: int, j: int) -> tuple[int, int]:
        """A name of parts i and j as they are now (it changes when either does): what joins are cached by."""
        return self._keys[i], self._keys[j]

    def _joined(self, i: int, j: int, region: np.ndarray, T: np.ndarray) -> tuple[list[Landing], np.ndarray]:
        """Landings and claim distances once parts i and j are one part: `region` (their samples) under motion T,
        in part i's place. The union's landing is cached by `pair`: one motion T per pair as it is now."""
        if self.pair(i, j) not in self._joins:
            self._joins[self.pair(i, j)] = (self.land(T, region), self.distances(T, region))
        landings, dist = list(self.landings), self.dist.copy()
        landings[i], dist[i] = self._joins[self.pair(i, j)]
        del landings[j]
        return landings, np.delete(dist, j, axis=0)

    def join_change(self, i: int, j: int, region: np.ndarray, T: np.ndarray) -> float:
        """How the total changes when parts i and j become one part of the samples `region` moving by T."""
        if self._now is None:
            self._now = self.total()
        return self.total(*self._joined(i, j, region, T)) - self._now

    def join(self, i: int, j: int, region: np.ndarray, T: np.ndarray) -> None:
        """Parts i and j made one part of the samples `region` moving by T, in part i's place."""
        self.landings, self.dist = self._joined(i, j, region, T)
        self.regions[i], self.motions[i], self._keys[i] = region, T, max(self._keys) + 1
        del self.regions[j], self.motions[j], self._keys[j]
        self._now = None

    def give(self, i: int, host: int) -> None:
        """Part i given to `host` (-1: the static body); `host` is an index before the removal."""
        self.landings, self.dist, _ = self._given(i, host)
        if host >= 0:
            self.regions[host] = np.concatenate([self.regions[host], self.regions[i]])
            self._keys[host] = max(self._keys) + 1
        del self.regions[i], self.motions[i], self._keys[i]
        self._now = None
