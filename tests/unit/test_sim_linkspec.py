"""--link parsing and the shaper's per-frame decisions (pure logic; the real link is tested in integration)."""

from __future__ import annotations

import random

import pytest
from typer.testing import CliRunner

from deployer.cli import app
from deployer.errors import DeployerError
from deployer.sim.linkspec import LinkSpec, Shape, parse_link
from deployer.sim.shaper import Direction


def test_one_spec_shapes_both_directions():
    spec = parse_link("delay=50,rate=10,loss=1")
    assert spec.down == spec.up == Shape(delay=50, rate=10, loss=1)
    assert spec.spec() == "delay=50,rate=10,loss=1"


def test_per_direction_specs():
    spec = parse_link("down:delay=50,rate=10 up:delay=5")
    assert spec.down == Shape(delay=50, rate=10)
    assert spec.up == Shape(delay=5)
    assert parse_link(spec.spec()) == spec
    assert parse_link("both:loss=2.5") == LinkSpec(Shape(loss=2.5), Shape(loss=2.5))
    assert parse_link("up:delay=1") == LinkSpec(Shape(), Shape(delay=1))


def test_both_and_a_direction_conflict():
    with pytest.raises(DeployerError, match="given twice"):
        parse_link("both:loss=2 up:delay=1")


def test_units_are_accepted_as_suffixes():
    assert parse_link("delay=20ms,rate=5mbit,loss=1%").down == Shape(delay=20, rate=5, loss=1)


def test_json_round_trip():
    spec = parse_link("down:delay=3,jitter=1,limit=50 up:rate=2")
    assert LinkSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("text, message", [
    ("dealy=50", "unknown key 'dealy' (did you mean delay?)"),
    ("delay", "not key=value"),
    ("delay=fast", "not a number"),
    ("loss=150", "percentage"),
    ("rate=-1", ">= 0"),
    ("limit=0", "whole number"),
    ("sideways:delay=1", "must start with 'down:', 'up:' or 'both:'"),
    ("", "empty"),
    ("delay=inf", "finite"), ("rate=1e400", "finite"), ("delay=20000", "over 10000 ms"),
    ("delay=5,delay=50", "delay is given twice"),
])
def test_bad_specs_name_the_problem(text, message):
    with pytest.raises(DeployerError) as err:
        parse_link(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_rejects_a_bad_link_in_one_line_with_exit_2():
    res = CliRunner().invoke(app, ["sim", "up", "--link", "delay=5,lsos=1"])
    assert res.exit_code == 2
    assert "unknown key 'lsos' (did you mean loss?)" in res.output
    assert "Traceback" not in res.output


# --- shaper decisions ----------------------------------------------------------------------------

def _dir(shape: Shape, seed: int = 1) -> Direction:
    return Direction(src=None, dst=None, shape=shape, rng=random.Random(seed))  # type: ignore[arg-type]


def test_rate_serialises_frames_back_to_back():
    d = _dir(Shape(rate=8))  # 8 Mbit/s: a 1000-byte frame takes 1 ms on the wire
    times = [d.admit(b"x" * 1000, now=10.0) for _ in range(3)]
    assert times == pytest.approx([10.001, 10.002, 10.003])
    # an idle link starts fresh: no credit is carried over from the past
    assert d.admit(b"x" * 1000, now=20.0) == pytest.approx(20.001)


def test_delay_is_added_after_serialisation():
    d = _dir(Shape(rate=8, delay=50))
    assert d.admit(b"x" * 1000, now=0.0) == pytest.approx(0.051)


def test_jitter_stays_within_bounds_and_never_goes_back_in_time():
    d = _dir(Shape(delay=2, jitter=5))
    times = [d.admit(b"x", now=1.0) for _ in range(500)]
    assert min(times) >= 1.0
    assert max(times) <= 1.0 + 0.007
    assert len(set(times)) > 100


def test_loss_drops_about_the_given_share():
    d = _dir(Shape(loss=10), seed=7)
    dropped = sum(d.admit(b"x", now=0.0) is None for _ in range(20000))
    assert 1700 < dropped < 2300
    assert all(_dir(Shape(loss=100)).admit(b"x", 0.0) is None for _ in range(100))
    assert all(_dir(Shape()).admit(b"x", 0.0) == 0.0 for _ in range(100))


def test_a_full_queue_drops():
    d = _dir(Shape(limit=2))
    d.queued = 2
    assert d.admit(b"x", 0.0) is None
    d.queued = 1
    assert d.admit(b"x", 0.0) == 0.0
