"""`--link` specs: "delay=50,rate=10,loss=1" (both ways) or "down:delay=50,rate=10 up:delay=5".

delay and jitter are one-way milliseconds (so delay=50 both ways is a 100 ms round trip), rate is
Mbit/s (0 = unlimited), loss is percent, limit is the queue length in packets. `down` is host ->
board, `up` is board -> host, like a WiFi or LTE link seen from the board.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass

from deployer.errors import DeployerError

KEYS = ("delay", "rate", "loss", "jitter", "limit")
# one way: an SSH connect is several round trips, and the boards' connect timeout (sim.yaml) is 30 s
MAX_DELAY_MS = 10_000
HELP = "use e.g. --link 'delay=50,rate=10,loss=1' or 'down:delay=50,rate=10 up:delay=5' (ms, Mbit/s, %)"


@dataclass(frozen=True)
class Shape:
    delay: float = 0.0
    rate: float = 0.0
    loss: float = 0.0
    jitter: float = 0.0
    limit: int = 1000

    @property
    def active(self) -> bool:
        return bool(self.delay or self.rate or self.loss or self.jitter)

    def spec(self) -> str:
        parts = [f"{k}={_num(getattr(self, k))}" for k in KEYS[:4] if getattr(self, k)]
        if self.limit != 1000:
            parts.append(f"limit={self.limit}")
        return ",".join(parts)


@dataclass(frozen=True)
class LinkSpec:
    down: Shape   # host -> board
    up: Shape     # board -> host

    @property
    def active(self) -> bool:
        return self.down.active or self.up.active

    def spec(self) -> str:
        if self.down == self.up:
            return self.down.spec()
        return " ".join(f"{name}:{s.spec() or 'none'}" for name, s in (("down", self.down), ("up", self.up)))

    def to_json(self) -> dict:
        return {"down": asdict(self.down), "up": asdict(self.up), "spec": self.spec()}

    @classmethod
    def from_json(cls, data: dict) -> "LinkSpec":
        return cls(Shape(**data["down"]), Shape(**data["up"]))


def parse_link(text: str) -> LinkSpec:
    """Parse a --link value; one DeployerError line naming the bad part otherwise."""
    text = text.strip()
    if not text:
        raise DeployerError(f"--link is empty; {HELP}")
    parts = text.replace(";", " ").split()
    if not any(":" in p for p in parts):
        shape = parse_shape(",".join(parts))
        return LinkSpec(shape, shape)
    found: dict[str, Shape] = {}
    for part in parts:
        direction, sep, body = part.partition(":")
        if not sep or direction not in ("down", "up", "both"):
            raise DeployerError(f"--link: {part!r} must start with 'down:', 'up:' or 'both:'; {HELP}")
        shape = parse_shape(body)
        for d in (("down", "up") if direction == "both" else (direction,)):
            if d in found:
                raise DeployerError(f"--link: direction {d!r} is given twice; {HELP}")
            found[d] = shape
    return LinkSpec(found.get("down", Shape()), found.get("up", Shape()))


def parse_shape(body: str) -> Shape:
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise DeployerError(f"--link: {item!r} is not key=value; {HELP}")
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DeployerError(f"--link: unknown key {key!r}{hint}; keys are {', '.join(KEYS)}")
        try:
            value = float(raw.strip().removesuffix("ms").removesuffix("mbit").removesuffix("%"))
        except ValueError:
            raise DeployerError(f"--link: {key}={raw!r} is not a number; {HELP}") from None
        if key in values:   # delay=5,delay=50 silently kept the last one
            raise DeployerError(f"--link: {key} is given twice in {body!r}; {HELP}")
        if value < 0 or not math.isfinite(value):   # inf/1e400 passed: a board no SSH could ever reach
            raise DeployerError(f"--link: {key}={raw} must be a finite number >= 0")
        if key in ("delay", "jitter") and value > MAX_DELAY_MS:
            raise DeployerError(f"--link: {key}={raw} is over {MAX_DELAY_MS} ms one way: SSH (several round "
                                "trips) could not connect to the board within its 30 s timeout")
        if key == "loss" and value > 100:
            raise DeployerError(f"--link: loss={raw} is a percentage (0-100)")
        if key == "limit" and (value < 1 or value != int(value)):
            raise DeployerError(f"--link: limit={raw} must be a whole number of packets >= 1")
        values[key] = value
    if "limit" in values:
        values["limit"] = int(values["limit"])
    return Shape(**values)  # type: ignore[arg-type]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
