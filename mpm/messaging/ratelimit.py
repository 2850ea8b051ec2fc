"""Limits every worker respects together, kept in Redis: a gateway's send rate and TextBee's plan quota."""
import time
from datetime import datetime, timezone

from mpm.queue import redis_connection

# Reserve `count` slots at `rate`/s on a shared schedule (GCRA): returns how long the caller must
# wait before sending. Redis's clock, so every worker on every machine agrees. A wait longer than
# ARGV[3] (when >= 0) reserves nothing: the caller will come back later instead.
_RESERVE = """
local now_s, now_us = unpack(redis.call('TIME'))
local now = tonumber(now_s) + tonumber(now_us) / 1e6
local step = tonumber(ARGV[1]) / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local max_wait = tonumber(ARGV[3])
if max_wait >= 0 and tat - now > max_wait then
  return tostring(tat - now)
end
redis.call('SET', KEYS[1], tostring(tat + step), 'EX', math.ceil(tat + step - now) + 60)
return tostring(tat - now)
"""

# Take up to ARGV[1] units from every counter KEYS[i] with limit ARGV[i+1]; returns how many were
# granted (the same on all counters), so two workers can never overspend a quota together.
_QUOTA = """
local want = tonumber(ARGV[1])
local grant = want
for i, key in ipairs(KEYS) do
  local left = tonumber(ARGV[i + 1]) - tonumber(redis.call('GET', key) or '0')
  if left < grant then grant = left end
end
if grant < 0 then grant = 0 end
if grant > 0 then
  for i, key in ipairs(KEYS) do
    redis.call('INCRBY', key, grant)
    redis.call('EXPIRE', key, tonumber(ARGV[#KEYS + 2]))
  end
end
return grant
"""

_QUOTA_PERIODS = {"day": ("%Y%m%d", 2 * 86400), "month": ("%Y%m", 32 * 86400)}


def reserve_send_slot(company_id: int, gateway: str, count: int, rate: float | None,
                      max_wait: float | None = None) -> float:
    """Reserve `count` messages on this company's gateway at `rate` messages/s (shared by all
    workers); returns the seconds to wait before sending them. No rate → 0. When the wait would
    exceed `max_wait`, nothing is reserved and the (longer) wait is returned."""
    if not rate or rate <= 0 or count <= 0:
        return 0.0
    limit = -1 if max_wait is None else max_wait
    wait = float(redis_connection().eval(_RESERVE, 1, f"mpm:rate:{company_id}:{gateway}", count, rate, limit))
    return max(wait, 0.0)


def wait_for_send_slot(company_id: int, gateway: str, count: int, rate: float | None) -> float:
    """reserve_send_slot, then sleep for it. Returns the seconds waited."""
    wait = reserve_send_slot(company_id, gateway, count, rate)
    if wait > 0:
        time.sleep(wait)
    return wait


def _quota_keys(company_id: int, gateway: str, limits: dict[str, int], now: datetime) -> tuple[list[str], list[int], int]:
    keys, values = [], []
    for period, limit in limits.items():
        fmt, _ = _QUOTA_PERIODS[period]
        keys.append(f"mpm:quota:{company_id}:{gateway}:{period}:{now.strftime(fmt)}")
        values.append(int(limit))
    ttl = max(_QUOTA_PERIODS[p][1] for p in limits)
    return keys, values, ttl


def take_quota(company_id: int, gateway: str, wanted: int, limits: dict[str, int], now: datetime | None = None) -> int:
    """Grant up to `wanted` messages within every limit ({"day": 50, "month": 300}); returns the
    number granted. Periods follow UTC."""
    if wanted <= 0 or not limits:
        return wanted
    keys, values, ttl = _quota_keys(company_id, gateway, limits, now or datetime.now(timezone.utc))
    return int(redis_connection().eval(_QUOTA, len(keys), *keys, wanted, *values, ttl))


def give_back_quota(company_id: int, gateway: str, count: int, limits: dict[str, int], now: datetime | None = None) -> None:
    """Messages that the gateway did not take do not count against the plan."""
    if count <= 0 or not limits:
        return
    keys, _, _ = _quota_keys(company_id, gateway, limits, now or datetime.now(timezone.utc))
    pipe = redis_connection().pipeline()
    for key in keys:
        pipe.decrby(key, count)
    pipe.execute()


def quota_used(company_id: int, gateway: str, limits: dict[str, int], now: datetime | None = None) -> dict[str, int]:
    keys, _, _ = _quota_keys(company_id, gateway, limits, now or datetime.now(timezone.utc))
    values = redis_connection().mget(keys)
    return {period: int(v or 0) for period, v in zip(limits, values)}
