"""Releasing every lease of one owner leaves the other owners' leases alone."""

from __future__ import annotations

from nimflow._store import Store


def test_release_all_drops_only_that_owners_leases(store_url: str) -> None:
    store = Store.open()
    try:
        assert store.claim(["a", "b"], "me", 30).held == {"a", "b"}
        assert store.claim(["c"], "other", 30).held == {"c"}
        store.release_all("me")
        assert store.claimed_by_others(["a", "b", "c"], "third") == {"c"}
        assert store.claim(["a", "b", "c"], "third", 30).held == {"a", "b"}
    finally:
        store.close()
