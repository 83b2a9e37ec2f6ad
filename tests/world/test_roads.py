"""Procedural road networks and towns."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.types import Command
from vavam.world.geometry import box_corners, boxes_overlap
from vavam.world.roads import LANE_WIDTH, NetworkConfig, build_network
from vavam.world.town import generate_town

SMALL = NetworkConfig(grid=(3, 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lane_graph_is_closed_and_continuous(seed):
    net = build_network(np.random.default_rng(seed), SMALL)
    for lane in net.lanes:
        assert lane.successors, f"lane {lane.id} is a dead end"
        for nxt in lane.successors:
            gap = np.linalg.norm(lane.line.points[-1] - net.lanes[nxt].line.points[0])
            assert gap < 1e-6, f"lane {lane.id} -> {nxt} jumps {gap} m"
            heading_jump = np.cos(lane.line.heading(lane.length) - net.lanes[nxt].line.heading(0.0))
            assert heading_jump > 0.99  # smooth joins (connectors start/end tangent to the lanes)
    turns = {net.lanes[c].turn for n in net.nodes for c in n.connectors}
    assert turns == {Command.LEFT, Command.RIGHT, Command.STRAIGHT}


def test_lanes_keep_right_and_are_lane_width_apart():
    net = build_network(np.random.default_rng(0), SMALL)
    road = net.roads[0]
    mid = road.centre.length / 2
    p = road.centre.position(mid)
    for k, lane_id in enumerate(road.forward):
        _, lateral = road.centre.project(net.lanes[lane_id].line.position(net.lanes[lane_id].length / 2))
        assert lateral == pytest.approx(-(k + 0.5) * LANE_WIDTH, abs=0.1)  # right of the direction of travel
    for k, lane_id in enumerate(road.backward):
        _, lateral = road.centre.project(net.lanes[lane_id].line.position(net.lanes[lane_id].length / 2))
        assert lateral == pytest.approx((k + 0.5) * LANE_WIDTH, abs=0.1)
    assert p.shape == (2,)


def test_crossing_connectors_conflict():
    net = build_network(np.random.default_rng(0), SMALL)
    node = max(net.nodes, key=lambda n: len(n.arms))
    assert len(node.arms) == 4
    lanes = net.lanes
    left = [c for c in node.connectors if lanes[c].turn == Command.LEFT]
    straight = [c for c in node.connectors if lanes[c].turn == Command.STRAIGHT]
    # every left turn crosses some straight movement of the opposite arm
    for c in left:
        assert node.conflicts[c] & set(straight)
    for c in node.connectors:
        assert node.conflicts[c] <= node.conflicts_wide[c]


def test_invalid_configs_raise():
    with pytest.raises(ValueError, match="lane"):
        build_network(np.random.default_rng(0), NetworkConfig(lanes_x=(0,)))
    with pytest.raises(ValueError, match="grid"):
        build_network(np.random.default_rng(0), NetworkConfig(grid=(1, 3)))


def test_town_is_deterministic_and_scenery_stays_off_the_road():
    a, b = generate_town(5, SMALL), generate_town(5, SMALL)
    np.testing.assert_array_equal(a.scenery.buildings, b.scenery.buildings)
    np.testing.assert_array_equal(a.scenery.parked, b.scenery.parked)
    assert a.style == b.style
    assert len(a.scenery.buildings) > 10
    c = generate_town(6, SMALL)
    assert c.style != a.style
    net = a.network
    sc = a.scenery
    for x, y, yaw, length, width, *_ in sc.buildings[:40]:
        corners = box_corners(x, y, yaw, length, width)
        for road in net.roads:
            assert np.all(road.centre.distance(corners) > road.half_width + net.config.sidewalk)
    # buildings never overlap each other
    corners = [box_corners(*b[:5]) for b in sc.buildings]
    for i in range(len(corners)):
        for j in range(i + 1, len(corners)):
            if np.hypot(*(sc.buildings[i, :2] - sc.buildings[j, :2])) < 40:
                assert not boxes_overlap(corners[i], corners[j])
