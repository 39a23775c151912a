"""Upper bounds on user-given durations, in one place for every command that takes one.

A week: longer than anyone waits for a board lock, bakes a rollout wave or times one model, and
far below the values that break what runs underneath (the board's flock(1) cannot arm a timer for
inf or 1e300; time.sleep overflows past ~292 years; a 1e308 s run is a run that never ends).
"""

from __future__ import annotations

MAX_WAIT_S = 7 * 86400

