"""Leases in Redis: "someone is on it" markers that vanish on their own when the holder dies.

A job that owns some work (a company's send lane, a broadcast's fan-out) holds a lease and renews
it while it works; a killed process stops renewing, the lease expires, and the minute sweep sees
the work is unowned and hands it to a new job. A duplicate holder is harmless by design (every
write is a compare-and-set), so leases only decide how fast lost work is picked up again."""
from mpm.queue import redis_connection

_PREFIX = "mpm:lease:"


def take(name: str, seconds: int, holder: str = "1") -> bool:
    """Take the lease if nobody holds it; True when taken."""
    return bool(redis_connection().set(_PREFIX + name, holder, nx=True, ex=seconds))


def hold(name: str, seconds: int, holder: str = "1") -> None:
    """Take or renew the lease for `seconds` from now, whoever held it."""
    redis_connection().set(_PREFIX + name, holder, ex=seconds)


def held(name: str) -> bool:
    return bool(redis_connection().exists(_PREFIX + name))


def holder(name: str) -> str | None:
    value = redis_connection().get(_PREFIX + name)
    return value.decode() if value is not None else None


def release(name: str) -> None:
    redis_connection().delete(_PREFIX + name)


_RELEASE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def release_if_holder(name: str, holder: str) -> bool:
    """Release only a lease this holder still has (not one another took after it expired)."""
    return bool(redis_connection().eval(_RELEASE_IF, 1, _PREFIX + name, holder))
