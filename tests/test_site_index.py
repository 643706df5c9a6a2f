"""The vectorized site-id lookup agrees with a dict, for any ids."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vpp.twins.ids import SiteIndex

ids = st.text(min_size=0, max_size=30)


@settings(max_examples=300, deadline=None)
@given(registered=st.lists(ids, max_size=60, unique=True), extra=st.lists(ids, max_size=60))
@example(registered=["", "\x00"], extra=[])  # same fingerprint, lengths differ (found by CI)
def test_lookup_matches_a_dict(registered: list[str], extra: list[str]) -> None:
    index = SiteIndex()
    for s in registered:
        index.add(s)
    queries = registered + extra + [s + "\x00" for s in registered] + [s[:-1] for s in registered]
    expected = [index.map.get(q, -1) for q in queries]
    assert index.lookup(queries).tolist() == expected
    assert index.lookup_vectorized(queries).tolist() == expected  # small batches too


def test_large_fleet_and_growth() -> None:
    index = SiteIndex()
    first = [f"site-{i:06d}" for i in range(50_000)]
    for s in first:
        index.add(s)
    rng = np.random.default_rng(1)
    picks = [first[i] for i in rng.integers(0, len(first), 5_000)] + ["site-9999999", "site-"]
    assert index.lookup(picks).tolist() == [index.map.get(p, -1) for p in picks]
    # Registering more (longer ids too) rebuilds the table lazily.
    later = [f"site-long-{i:09d}" for i in range(1_000)]
    for s in later:
        index.add(s)
    assert index.lookup([*later[:10], *first[:10]]).tolist() == [
        *range(50_000, 50_010),
        *range(10),
    ]
