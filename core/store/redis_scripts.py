"""The Lua scripts of :mod:`core.store.redis_coordination`, one per step that must happen
at once in Redis (see that module's docstring for what each piece is for).

Each comment names the script's KEYS and ARGV and what it returns.
"""

from __future__ import annotations

from chatbridge.core.store.redis_journal import _RECORD

# KEYS: lease, fencing counter. ARGV: replica, period (ms). The lease value, or false.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local value = ARGV[1] .. ' ' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: value, period (ms).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: value.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, stream, reply list ('' when none). ARGV: lease value, group, entry id, the
# result for the reply list. Fenced: only the lease holder.
ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if KEYS[3] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], 300)
end
return 1
"""

# A stream command that needs the group: the group is made when missing (a new stream, or a
# Redis restarted without persistence), then the command runs again.
GROUPED_PRELUDE = """
local function grouped(stream, name, ...)
  local got = redis.pcall(...)
  if type(got) == 'table' and got.err then
    if not string.find(got.err, 'NOGROUP', 1, true) then return redis.call(...) end
    redis.call('XGROUP', 'CREATE', stream, name, '0', 'MKSTREAM')
    return redis.call(...)
  end
  return got
end
"""

# Entries taken under a lease (read or claimed): each message's journal entry is stamped with
# the lease (its journal writes are fenced by it from now on) and comes back with it, so the
# turn needs no other round trip to start.
TAKEN = """
local function taken(prefix, lease_key, lease, entries, out)
  for _, e in ipairs(entries) do
    local f = e[2]
    if f then
      local bot, seq = nil, nil
      for j = 1, #f, 2 do
        if f[j] == 'bot' then bot = f[j + 1] elseif f[j] == 'seq' then seq = f[j + 1] end
      end
      local data = {}
      if bot and seq and seq ~= '0' then
        local key = prefix .. 'j:e:' .. bot .. ':' .. seq
        if redis.call('EXISTS', key) == 1 then
          redis.call('HSET', key, 'fence_key', lease_key, 'fence', lease)
          data = redis.call('HGETALL', key)
        end
      end
      out[#out + 1] = {e[1], f, data}
    end
  end
  return out
end
"""

# KEYS: per partition its lease, then its stream. ARGV: group, consumer, count, key prefix,
# then the lease value held for each partition. Per partition: 0 when the lease is not (or no
# longer) the caller's, else {where to wait from, the new entries (XREADGROUP >) taken as in
# TAKEN}: where to wait from is the last entry read, or else the newest entry in the stream
# (every newer one is new), or 0-0 for an empty one. Lease check and read in one step: nobody
# but the holder ever receives a partition's entries.
READ = (
    GROUPED_PRELUDE
    + TAKEN
    + """
local out = {}
for i = 1, #KEYS / 2 do
  local stream = KEYS[2 * i]
  local lease = ARGV[4 + i]
  if redis.call('GET', KEYS[2 * i - 1]) ~= lease then
    out[i] = 0
  else
    local got = grouped(stream, ARGV[1], 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2],
      'COUNT', ARGV[3], 'STREAMS', stream, '>')
    local entries = got and got[1][2] or {}
    local last = '0-0'
    if #entries > 0 then
      last = entries[#entries][1]
    else
      local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if top[1] then last = top[1][1] end
    end
    out[i] = {last, taken(ARGV[4], KEYS[2 * i - 1], lease, entries, {})}
  end
end
return out
"""
)

# A partition's holder waits for news on its bell (``bell:<replica>``, a capped stream of
# partition numbers), not on the partitions' streams: an entry it took itself (a record that
# takes) rings nothing, so it does not wake for it. Whoever queues an entry it does not take
# rings the holder named in the partition's lease (none: nobody holds it; whoever takes the
# partition reads it whole first). Capped at about 1,000 rings (the holder reads up to 1,000 at
# once; a ring trimmed unread under a burst waits for its once-a-second read of everything)
# and gone an hour after the last ring (a replica that left).
RING = """
local function ring(lease_key, prefix, partition)
  local holder = redis.call('GET', lease_key)
  local name = holder and string.match(holder, '^(.*) [^ ]*$')
  if name then
    local bell = prefix .. 'bell:' .. name
    redis.call('XADD', bell, 'MAXLEN', '~', 1000, '*', 'p', partition)
    redis.call('PEXPIRE', bell, 3600000)
  end
end
"""

# Places in several windows (sorted sets of the times of what each let through): in every one
# of them at once, or in none. ``limits`` holds each key's limit and period (ms) in turn.
# Returns '0', or the milliseconds until one frees (as a string: Lua would truncate a number).
TAKE_WINDOWS = """
local function take_windows(keys, member, limits)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local wait = 0
  for i = 1, #keys do
    local limit = tonumber(limits[2 * i - 1])
    local period = tonumber(limits[2 * i])
    redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', now - period)
    if redis.call('ZCARD', keys[i]) >= limit then
      local oldest = redis.call('ZRANGE', keys[i], 0, 0, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + period - now)
    end
  end
  if wait > 0 then return tostring(math.max(wait, 1)) end
  for i = 1, #keys do
    redis.call('ZADD', keys[i], now, member .. now)
    redis.call('PEXPIRE', keys[i], math.ceil(tonumber(limits[2 * i])))
  end
  return '0'
end
"""

# The journal's record script, then the XADD of the same message into its partition's stream
# (KEYS[5]; ARGV[7] bot, ARGV[8] conversation member), in one script: both or neither. KEYS[6]
# the partition's lease; ARGV[9] key prefix, ARGV[10] partition, ARGV[11] the lease value the
# caller holds ('' = none), ARGV[12] group, ARGV[13] consumer, ARGV[14] count. The caller that
# holds the lease also reads the partition in the same step, as READ does (the entries come
# from the same consumer-group cursor, so each is handed out once, in stream order, whichever
# of the two takes it); else the holder's bell is rung. Returns 0 when the message was recorded
# already (nothing queued), else {seq, the entries taken as in TAKEN (the new one, and any
# recorded before it that no read took yet) | 0 when the caller's lease is not (or no longer)
# the holder's | -1 when no lease was given}. With the prelude (KEYS[7] the conversation's
# turns_per_minute window, KEYS[8] its session hash; ARGV[15] a unique member, '' = no
# window, ARGV[16] limit, ARGV[17] period ms), when the new message is the only entry taken
# (its turn starts at once): also {.., the window's verdict as WINDOWS returns it, the
# session hash's fields}, one round trip instead of three.
_RECORD_TAIL = "return seq"
if not _RECORD.rstrip().endswith(_RECORD_TAIL):  # pragma: no cover - guards the composition
    raise ImportError("the journal's record script no longer ends with 'return seq'")
RECORD_AND_QUEUE = (
    GROUPED_PRELUDE
    + TAKEN
    + RING
    + TAKE_WINDOWS
    + _RECORD.rstrip()[: -len(_RECORD_TAIL)]
    + """
redis.call('XADD', KEYS[5], '*', 'bot', ARGV[7], 'seq', seq, 'conv', ARGV[8])
if ARGV[11] ~= '' and redis.call('GET', KEYS[6]) == ARGV[11] then
  local got = grouped(KEYS[5], ARGV[12], 'XREADGROUP', 'GROUP', ARGV[12], ARGV[13],
    'COUNT', ARGV[14], 'STREAMS', KEYS[5], '>')
  local entries = got and got[1][2] or {}
  local out = taken(ARGV[9], KEYS[6], ARGV[11], entries, {})
  if KEYS[8] and #entries == 1 then
    -- the turn's prelude: the new message is all it took, so its turn starts now
    local wait = '0'
    if ARGV[15] ~= '' then
      wait = take_windows({KEYS[7]}, ARGV[15], {ARGV[16], ARGV[17]})
    end
    return {seq, out, wait, redis.call('HGETALL', KEYS[8])}
  end
  return {seq, out}
end
ring(KEYS[6], ARGV[9], ARGV[10])
if ARGV[11] == '' then return {seq, -1} end
return {seq, 0}
"""
)

# KEYS: stream, the partition's lease. ARGV: key prefix, partition, then the entry's field and
# value pairs. A session command queued behind the conversation's messages; the holder's bell
# is rung.
QUEUE = (
    RING
    + """
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
ring(KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS: lease, stream. ARGV: lease value, group, consumer, min idle (ms), key prefix. Every
# pending entry idle that long, whoever read it, now the caller's (XAUTOCLAIM), taken as in
# TAKEN; 0 when the lease is not the caller's.
CLAIM = (
    GROUPED_PRELUDE
    + TAKEN
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local out = {}
local start = '0-0'
repeat
  local r = grouped(KEYS[2], ARGV[2], 'XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], ARGV[4], start,
    'COUNT', 500)
  start = r[1]
  taken(ARGV[5], KEYS[1], ARGV[1], r[2], out)
until start == '0-0'
return out
"""
)

# KEYS: lease, journal entry. ARGV: lease value. A turn starts: its entry is stamped with the
# lease, which fences the journal's writes for it from now on; returns the entry's fields,
# {} when it is gone, 0 when the lease is not the caller's.
TAKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
redis.call('HSET', KEYS[2], 'fence_key', KEYS[1], 'fence', ARGV[1])
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: replicas zset. ARGV: replica, period (ms); 'leave' as ARGV[3] removes it.
# Returns the live replicas (heartbeat within the period), oldest name first.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: replicas zset, then the leases held. ARGV: replica, period (ms), then the value held
# for each lease. The heartbeat and every renewal in one step (one round trip, however many
# partitions: a busy event loop must not let a lease lapse between sequential renewals).
# Returns {the live replicas as HEARTBEAT, the 1-based indexes of leases no longer held}.
BEAT_AND_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local lost = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i - 1
  end
end
return {redis.call('ZRANGE', KEYS[1], 0, -1), lost}
"""

# KEYS: one sorted set per window. ARGV: a unique member, then limit and period (ms) per key.
# Takes a place in every window, or in none: returns '0', or the milliseconds until one frees.
WINDOWS = (
    TAKE_WINDOWS
    + """
local limits = {}
for i = 2, #ARGV do limits[#limits + 1] = ARGV[i] end
return take_windows(KEYS, ARGV[1], limits)
"""
)
