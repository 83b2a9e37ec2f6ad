"""The intelligent driver model (Treiber et al. 2000): a car-following acceleration law."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class IDMParams:
    """IDM constants.

    Attributes:
        a_max: maximum (comfortable) acceleration, m/s^2.
        b_comf: comfortable deceleration, m/s^2.
        b_max: hard limit on braking, m/s^2.
        s0: jam distance, m.
        headway: desired time headway T, s.
        delta: free-road exponent.
    """

    a_max: float = 1.6
    b_comf: float = 2.0
    b_max: float = 8.0
    s0: float = 2.5
    headway: float = 1.3
    delta: float = 4.0


def idm_accel(v: float, v0: float, gap: float | None = None, v_lead: float = 0.0, p: IDMParams = IDMParams()) -> float:
    """IDM acceleration at speed ``v`` with desired speed ``v0`` behind a leader ``gap`` metres ahead.

    ``gap`` is bumper to bumper; None means a free road. The result is clipped to ``[-b_max, a_max]``.
    """
    v0 = max(v0, 0.1)
    free = 1.0 - (max(v, 0.0) / v0) ** p.delta
    if gap is None:
        acc = p.a_max * free
    else:
        s_star = p.s0 + max(0.0, v * p.headway + v * (v - v_lead) / (2.0 * math.sqrt(p.a_max * p.b_comf)))
        acc = p.a_max * (free - (s_star / max(gap, 0.1)) ** 2)
    return min(max(acc, -p.b_max), p.a_max)
