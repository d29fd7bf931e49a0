"""The one home-timeline insert every timeline script runs (fan-out, batches, routed fan-out).

A home is a sorted set of `keys.home_member` ids, newest first, kept to `cap` entries. The trim
runs only when the ZADD added the id: a repeated insert changes nothing, and a home holds at
most `cap` entries before every insert. Two calls per new entry, not ZADD, ZCARD and a trim:
inside a script each call costs Redis about a microsecond besides its own work.
"""

HOME_INSERT = """
local function home_insert(home, id, cap)
  if redis.call('ZADD', home, 0, id) == 1 then
    redis.call('ZREMRANGEBYRANK', home, cap, -1)
  end
end
"""
