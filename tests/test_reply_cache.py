"""The reply cache stays bounded in bytes and shrinks back when idle (issue 19).

An attack run's burst of 100 000 pings kept 57 MB of cache entries and waves of short
connections kept theirs until another request came. These drive mapid's own ReplyCache
with real keys and replies (bench/churn.py measures the daemon's RSS under the same loads).
"""

from __future__ import annotations

import sys

from mapid.daemon.bus.reply_cache import (
    ENTRY_OVERHEAD,
    REPLY_CACHE_TTL,
    Pending,
    ReplyCache,
    cache_key,
)

REPLY = b"\x83\xa2id\xa9p00000001\xa2ok\xc3\xa6result\x80" + b"x" * 60


def fill(cache: ReplyCache, count: int, identity: bytes = b"\x00k\x8bEg") -> None:
    for number in range(count):
        key = cache_key(identity, f"p{number:09d}")
        cache.start(key)
        cache.finish(key, REPLY)


def test_the_cache_is_bounded_in_bytes_and_drops_the_oldest_first() -> None:
    cache = ReplyCache(max_bytes=1024 * 1024)
    fill(cache, 50_000)
    assert cache.size <= cache.max_bytes
    per_entry = len(cache_key(b"\x00k\x8bEg", "p000000000")) + len(REPLY) + ENTRY_OVERHEAD
    assert len(cache.entries) == cache.max_bytes // per_entry
    assert cache.evicted == 50_000 - len(cache.entries)
    assert cache.get(cache_key(b"\x00k\x8bEg", "p000049999")) == REPLY  # the newest stays
    assert cache.get(cache_key(b"\x00k\x8bEg", "p000000000")) is None  # the oldest went


def test_a_running_request_is_never_evicted_for_size() -> None:
    cache = ReplyCache(max_bytes=64 * 1024)
    running = cache_key(b"slow", 7)
    cache.start(running)
    waiting = cache.get(running)
    assert isinstance(waiting, Pending)
    waiting.duplicates += 2
    fill(cache, 5_000)
    assert cache.get(running) is waiting
    assert cache.finish(running, REPLY) == 2  # its duplicates still get the reply


def test_an_idle_purge_empties_the_cache_and_shrinks_its_table() -> None:
    cache = ReplyCache(max_bytes=1 << 30)
    fill(cache, 100_000)
    assert sys.getsizeof(cache.entries) > 4 * 1024 * 1024
    freed = cache.purge(now=float("inf"))
    assert freed > 100_000 * len(REPLY) and cache.size == 0 and not cache.entries
    # a dict keeps its table after deletions; the cache rebuilds it
    assert sys.getsizeof(cache.entries) < 64 * 1024
    assert cache.evicted == 0  # expired, not evicted


def test_expired_replies_are_not_answered() -> None:
    cache = ReplyCache(ttl=REPLY_CACHE_TTL)
    key = cache_key(b"id", "a")
    cache.start(key)
    cache.finish(key, REPLY)
    assert cache.get(key) == REPLY
    cache.purge(now=float("inf"))
    assert cache.get(key) is None


def test_keys_keep_ids_of_different_types_and_identities_apart() -> None:
    assert cache_key(b"a", 1) != cache_key(b"a", "1")
    assert cache_key(b"ab", "c") != cache_key(b"a", "bc")
    assert cache_key(b"a", "x") != cache_key(b"b", "x")
