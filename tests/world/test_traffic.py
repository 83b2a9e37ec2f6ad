"""IDM, intersection yielding, traffic without collisions, the expert ego."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.types import Command
from vavam.world.geometry import box_corners, boxes_overlap
from vavam.world.idm import IDMParams, idm_accel
from vavam.world.roads import NetworkConfig
from vavam.world.sim import World, WorldConfig
from vavam.world.traffic import Traffic

SMALL = WorldConfig(network=NetworkConfig(grid=(3, 3)))


def test_idm_free_road_and_following():
    p = IDMParams()
    assert idm_accel(0.0, 10.0, None, p=p) == pytest.approx(p.a_max)
    assert idm_accel(10.0, 10.0, None, p=p) == pytest.approx(0.0)
    assert idm_accel(10.0, 10.0, 5.0, 0.0, p) == -p.b_max  # standing car close ahead: full braking
    # at the equilibrium gap of a leader at the same speed, acceleration is about zero
    v = 8.0
    s_eq = (p.s0 + v * p.headway) / np.sqrt(1 - (v / 12.0) ** 4)
    assert idm_accel(v, 12.0, s_eq, v, p) == pytest.approx(0.0, abs=1e-9)


def test_follower_stops_behind_standing_car():
    world = World(0, WorldConfig(network=NetworkConfig(grid=(3, 3)), traffic_density=0.0))
    tr = world.traffic
    lane = max(world.net.road_lanes(), key=lambda ln: ln.length if ln.id != world.ego_agent.path[0] else 0)
    lead = tr.spawn(lane.id, lane.length - 30.0, v=0.0)
    lead.speed_factor = 0.0  # never moves
    follow = tr.spawn(lane.id, 5.0, v=10.0)
    follow.path[1:] = [lead.path[1]] + follow.path[2:]
    for _ in range(500):
        tr.step(0.0, 0.1)
    gap = lead.s - follow.s - 0.5 * (lead.length + follow.length)
    assert follow.v < 0.2
    assert 1.0 < gap < 4.0


def test_conflicting_requests_are_served_one_at_a_time():
    world = World(0, WorldConfig(network=NetworkConfig(grid=(3, 3)), traffic_density=0.0))
    net = world.net
    node = max(net.nodes, key=lambda n: len(n.arms))
    tr = Traffic(net, np.random.default_rng(0))
    c1 = next(c for c in node.connectors if net.lanes[c].turn == Command.LEFT)
    c2 = next(iter(node.conflicts[c1]))
    agents = []
    for c in (c1, c2):
        entry = net.lanes[c].predecessors[0]
        a = tr.spawn(entry, net.lanes[entry].length - 10.0, v=5.0, kind="car")
        a.path[1:] = [c, net.lanes[c].successors[0]]
        tr.extend_path(a)
        agents.append(a)
    tr.update_requests(0.0)
    granted = [c in a.granted for a, c in zip(agents, (c1, c2))]
    assert sum(granted) == 1
    # the other waits until the first has cleared the intersection, then gets its turn
    for _ in range(200):
        tr.step(0.0, 0.1)
    assert all(a.path[0] not in (c1, c2) for a in agents)


@pytest.mark.parametrize("seed", [0, 1])
def test_traffic_and_expert_drive_without_collisions(seed):
    world = World(seed, SMALL)
    lateral = []
    for step in range(300):
        world.step()
        if step % 5 == 0:
            b = world.traffic.boxes(include_ego=True)
            c = box_corners(b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4])
            d = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1])
            for i, j in zip(*np.nonzero(np.triu(d < 13.0, 1))):
                assert not boxes_overlap(c[i], c[j]), f"vehicles {b[i, 9]} and {b[j, 9]} collide at t={world.t}"
        lane = world.net.lanes[world.ego_agent.path[0]]
        lateral.append(abs(lane.line.project((world.ego.x, world.ego.y))[1]))
    assert max(lateral) < 0.8  # pure pursuit keeps the ego in its lane
    assert np.mean([a.v for a in world.traffic.agents]) > 1.0  # traffic flows


def test_expert_route_turns_and_command_rule():
    world = World(3, SMALL)
    seen = set()
    for step in range(600):
        world.step()
        if step % 5 == 0:
            seen.add(world.command())
    assert Command.STRAIGHT in seen and (Command.LEFT in seen or Command.RIGHT in seen)


def test_world_is_deterministic():
    a, b = World(7, SMALL), World(7, SMALL)
    for _ in range(50):
        a.step()
        b.step()
    np.testing.assert_array_equal(a.ego_pose, b.ego_pose)
    np.testing.assert_array_equal(a.vehicle_boxes(), b.vehicle_boxes())


def test_bad_world_config():
    with pytest.raises(ValueError):
        World(0, WorldConfig(dt=0.0))
