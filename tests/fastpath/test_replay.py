"""The RFC 6479 window against a readable model that remembers everything."""

from hypothesis import given, settings
from hypothesis import strategies as st

from nsmd.fastpath import reference
from nsmd.fastpath.replay import WINDOW, ReplayWindow


def test_basic_rules():
    w = ReplayWindow()
    assert w.accept(0) and not w.accept(0)
    assert w.accept(5) and w.accept(3) and not w.accept(3)
    assert w.accept(10_000)
    assert not w.would_accept(10_000 - WINDOW)  # fell out of the window
    assert w.would_accept(10_000 - WINDOW + 1)
    assert w.accept(2**64 - 2) and not w.accept(2**64 - 2)
    assert not w.accept(2**64 - 1)  # never valid: the window's top would wrap


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 5000), st.integers(0, 2**64 - 1)), max_size=300))
def test_window_agrees_with_the_model(counters):
    fast, model = ReplayWindow(), reference.ReplayWindow(WINDOW)
    for counter in counters:
        assert fast.would_accept(counter) == model.would_accept(counter), counter
        assert fast.accept(counter) == model.accept(counter), counter


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-70, 70), min_size=1, max_size=400))
def test_jitter_around_a_moving_edge(steps):
    # counters that mostly climb with reordering, like a real flow
    fast, model = ReplayWindow(), reference.ReplayWindow(WINDOW)
    top = 3000
    for step in steps:
        top += abs(step) // 3
        counter = max(0, top + step * 40)
        assert fast.accept(counter) == model.accept(counter)
