"""Claims: leases on cache keys, taken atomically, so two processes never hold the same key."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from nimflow._store import Store

KEYS = [f"key-{i}" for i in range(1000)]

# Claims the 1,000 keys in random slices (as a runner would, chunk by chunk) after the start signal,
# then prints what it got.
CLAIMER = textwrap.dedent(
    """
    import json, random, sys
    from nimflow._store import Store
    owner = sys.argv[1]
    keys = [f"key-{i}" for i in range(1000)]
    random.Random(owner).shuffle(keys)
    store = Store.open()
    sys.stdin.read(1)
    got = set()
    for start in range(0, len(keys), 50):
        got |= store.claim(keys[start : start + 50], owner, lease_seconds=600).held
    store.close()
    print(json.dumps(sorted(got)))
    """
)


@pytest.mark.timeout(180)
def test_two_processes_claiming_the_same_keys_get_disjoint_sets(store_url: str) -> None:
    Store.open().close()  # the schema first, so both start claiming at once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, owner],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for owner in ("a", "b")
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("g")
        proc.stdin.close()
        proc.stdin = None
    got = []
    for proc in procs:
        out, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err[-1500:]
        got.append(set(json.loads(out)))
    assert not got[0] & got[1]
    assert got[0] | got[1] == set(KEYS)
    store = Store.open()
    assert store.claimed_by_others(KEYS, "a") == got[1]
    assert store.claimed_by_others(KEYS, "b") == got[0]
    store.close()


def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(store_url: str) -> None:
    store = Store.open()
    assert store.claim(["k1", "k2"], "dead", lease_seconds=0.3).held == {"k1", "k2"}
    assert store.claim(["k1", "k2", "k3"], "alive", lease_seconds=60).held == {"k3"}
    assert store.claimed_by_others(["k1", "k2", "k3"], "alive") == {"k1", "k2"}
    deadline = time.monotonic() + 10
    while store.claimed_by_others(["k1"], "alive") and time.monotonic() < deadline:
        time.sleep(0.1)  # the dead owner never renews
    # k1 and k2 are taken over from the dead owner's expired leases; k3 was already ours.
    assert store.claim(["k1", "k2", "k3"], "alive", lease_seconds=60) == ({"k1", "k2", "k3"}, {"k1", "k2"})
    assert store.claim(["k1"], "dead", lease_seconds=60) == (set(), set())
    assert store.claimed_by_others(["k1", "k2", "k3"], "dead") == {"k1", "k2", "k3"}
    store.close()


def test_renew_and_release(store_url: str) -> None:
    store = Store.open()
    store.claim(["a", "b", "c"], "me", lease_seconds=0.5)
    assert store.renew("me", lease_seconds=60) == 3
    time.sleep(0.6)  # past the first lease; the renewed one holds
    assert store.claim(["a", "b", "c"], "other", lease_seconds=60).held == set()
    store.release_all("other")  # it holds none of them: nothing happens
    assert store.claimed_by_others(["a", "b", "c"], "other") == {"a", "b", "c"}
    store.release_all("me")
    assert store.claim(["a", "b", "c"], "other", lease_seconds=60).held == {"a", "b", "c"}
    assert store.renew("nobody", lease_seconds=60) == 0
    store.close()
