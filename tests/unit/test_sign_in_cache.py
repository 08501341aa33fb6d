"""The sign-in memory's own rules: nothing without a listener, nothing read before a change, nothing past its TTL."""

from __future__ import annotations

import time

from clinic.auth.cache import Remembered, SignInCache, forget_sign_ins


class Open:
    def is_closed(self) -> bool:
        return False


def listening_cache(**kw) -> SignInCache:
    cache = SignInCache("postgresql://unused", **kw)
    cache._conn = Open()  # type: ignore[assignment]
    return cache


def test_without_a_listener_nothing_is_stored_or_answered():
    cache = SignInCache("postgresql://unused")
    cache._stopped = True  # no loop here to start one in
    cache.put("k", Remembered("user", None), cache.generation)
    assert cache.get("k") is None


def test_a_lookup_that_began_before_a_change_is_not_stored():
    cache = listening_cache()
    began = cache.generation
    cache.forget_all()  # a notice arrived while the lookup was reading the old row
    cache.put("k", Remembered("user", None), began)
    assert cache.get("k") is None
    cache.put("k", Remembered("user", None), cache.generation)
    assert cache.get("k").user == "user"


def test_entries_expire_after_the_ttl():
    cache = listening_cache(ttl=0.05)
    cache.put("k", Remembered("user", None), cache.generation)
    assert cache.get("k") is not None
    time.sleep(0.06)
    assert cache.get("k") is None


def test_a_change_committed_in_this_process_forgets_in_every_cache():
    a, b = listening_cache(), listening_cache()
    for cache in (a, b):
        cache.put("k", Remembered("user", None), cache.generation)
    forget_sign_ins()
    assert a.get("k") is None and b.get("k") is None
