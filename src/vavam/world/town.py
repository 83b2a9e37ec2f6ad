"""A town: road network + scenery + look, generated from one seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vavam.world.roads import Network, NetworkConfig, build_network, lane_markings
from vavam.world.scenery import Scenery, build_scenery
from vavam.world.style import Style, random_style


@dataclass
class Town:
    """Everything static in a world (see :func:`generate_town`)."""

    seed: int
    network: Network
    scenery: Scenery
    style: Style
    markings: list

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the intersections."""
        xy = np.stack([n.xy for n in self.network.nodes])
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def generate_town(seed: int, config: NetworkConfig = NetworkConfig()) -> Town:
    """Build the town of ``seed``: the same seed always gives the same town."""
    rng = np.random.default_rng([int(seed), 0x70A7])
    net = build_network(rng, config)
    style = random_style(rng)
    scenery = build_scenery(rng, net, style)
    return Town(seed=int(seed), network=net, scenery=scenery, style=style, markings=lane_markings(net))
