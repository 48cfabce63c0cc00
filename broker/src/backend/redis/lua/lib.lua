-- The Redis backend's key layout and the steps its scripts share. Each
-- script is this library followed by its own body (scripts.rs puts them
-- together, after the lines that bind FIELDS, LOADED and the channels,
-- which the Rust side defines). Every script runs atomically; ARGV[1] is
-- the calling broker's id, ARGV[2] the retention of finished jobs in
-- microseconds, and the script's own arguments start at ARGV[3].
--
-- Global keys (standalone Redis: scripts touch them with a queue's):
--   sluice:jobs      HASH  job id -> its queue
--   sluice:queues    SET   every queue (Stats, PurgeQueue, the cap)
--   sluice:paused    SET   paused queues
--   sluice:due       ZSET  queue -> its next deadline (a scheduled job due,
--                          a lease expiring, a finished job's retention)
--   sluice:seq       STRING the enqueue order, over every queue
--   sluice:failures  LIST  the last failed attempts, newest first
--   sluice:counters  HASH  "queue|i" -> lifetime counter i of brokers gone
--   sluice:empty     SET   queues that may hold nothing (for the sweep)
--   sluice:brokers   SET   registered brokers
--   sluice:broker:B  STRING broker B's streams (JSON), with a TTL
--   sluice:broker:B:counters STRING broker B's counters (JSON)
--   sluice:held:B    SET   "stream:job" leased to broker B's streams
-- Keys of queue Q, all under the hash tag {Q}:
--   sluice:{Q}:j:ID     HASH  the job (fields: FIELDS below)
--   sluice:{Q}:r:TYPE   ZSET  ready jobs of a type: score -priority, member
--                             due time and enqueue order (fixed width) then id
--   sluice:{Q}:types    SET   types with ready jobs (a type whose set a
--                             claim emptied leaves it)
--   sluice:{Q}:s        ZSET  scheduled jobs by due time
--   sluice:{Q}:l        ZSET  leased jobs by lease expiry
--   sluice:{Q}:f        ZSET  finished jobs by finish time (retention)
--   sluice:{Q}:st:STATE ZSET  jobs in STATE by enqueue order (ListJobs;
--                             its ZCARD is the state's count)
--   sluice:{Q}:k        HASH  idempotency key -> the unfinished job holding it
-- Flow control (a queue under it: one with limits, or a key held back):
--   sluice:limited      SET   the queues under flow control
--   sluice:{Q}:limits   STRING its limits (the broker's limits_record JSON)
--   sluice:{Q}:flow     HASH  tokens, at (its bucket), turn (fair dispatch)
--   sluice:{Q}:rk:N:TK  ZSET  ready jobs of type T (N its length) and key K,
--                             as r:TYPE holds them; r:TYPE keeps those without
--   sluice:{Q}:ring:T   ZSET  the keys ('' for none) with ready jobs of type
--                             T, by the turn they were last dealt in
--   sluice:{Q}:kf       HASH  key -> its jobs leased
--   sluice:{Q}:kh       HASH  key -> held back until (us)
--   sluice:{Q}:kb       HASH  key -> its bucket, "tokens at"
-- Schedules (their bodies are the broker's, never read here):
--   sluice:schedules     SET   every schedule's name
--   sluice:schedules:due ZSET  name -> its next tick (ms), if it has one
--   sluice:schedule:NAME HASH  r (revision), n (next tick in ms, or ''), b (body)
--
-- Each command a script runs costs Redis about a microsecond to call and
-- another to append to the AOF, whatever it carries: most of its work per
-- job. So one HSET per transition sets every field that changes; a finished
-- job keeps its last lease's fields (read only while it is LEASED);
-- sluice:due is only ever moved earlier by a transition (ZADD LT), made
-- exact again by the maintenance that wakes; and the batch scripts
-- (enqueue, claim, ack) gather their set and sorted-set writes into one
-- variadic command per key (see `write`): a job's life from enqueue to
-- ack is five commands of its own and fourteen entries in shared ones.

local ME = ARGV[1]
local RETENTION_US = tonumber(ARGV[2])

local JOBS = 'sluice:jobs'
local QUEUES = 'sluice:queues'
local PAUSED = 'sluice:paused'
local DUE = 'sluice:due'
local SEQ = 'sluice:seq'
local FAILURES = 'sluice:failures'
local COUNTERS = 'sluice:counters'
local BROKERS = 'sluice:brokers'
local EMPTY = 'sluice:empty'
local SCHEDULES = 'sluice:schedules'
local SCHEDULES_DUE = 'sluice:schedules:due'
local LIMITED = 'sluice:limited'
local FAILURES_KEPT = 500
local UNFINISHED = {'scheduled', 'ready', 'leased'}
local STATES = {'scheduled', 'ready', 'leased', 'succeeded', 'dead', 'cancelled'}

-- Set and sorted-set writes (ZADD, ZREM, SADD, SREM, and HSET of a shared
-- hash; one member, or a score or field and its member or value): sent at
-- once, or, in a script that sets DEFER, gathered per command and key and
-- sent by `flush` as one variadic command each, removals first. Such a
-- script must not read what it deferred before flushing, nor add and
-- remove one member of one key.
local DEFER = false
local later, later_order = {}, {}
local function write(cmd, key, a, b)
  if not DEFER then
    if b == nil then redis.call(cmd, key, a) else redis.call(cmd, key, a, b) end
    return
  end
  local slot = cmd .. ' ' .. key
  local args = later[slot]
  if not args then
    args = {}
    later[slot] = args
    later_order[#later_order + 1] = {cmd, key, slot}
  end
  args[#args + 1] = a
  if b ~= nil then args[#args + 1] = b end
end
local REMOVES = {ZREM = true, SREM = true}
-- (Sent in steps of 1,000 arguments: Lua's unpack has a limit.)
local function flush()
  for _, removes in ipairs({true, false}) do
    for _, w in ipairs(later_order) do
      if (REMOVES[w[1]] == true) == removes then
        local args = later[w[3]]
        for i = 1, #args, 1000 do
          redis.call(w[1], w[2], unpack(args, i, math.min(i + 999, #args)))
        end
      end
    end
  end
  later, later_order = {}, {}
end

local function broker_key(b) return 'sluice:broker:' .. b end
local function counters_key(b) return 'sluice:broker:' .. b .. ':counters' end
local function held_key(b) return 'sluice:held:' .. b end
local function qkey(q, suffix) return 'sluice:{' .. q .. '}:' .. suffix end
local function job_key(q, id) return qkey(q, 'j:' .. id) end
local function ready_key(q, t) return qkey(q, 'r:' .. t) end

-- A whole number as text, every digit (tostring would round it to 14
-- significant digits in an exponent).
local function int(n) return string.format('%d', n) end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The job's fields the broker reads (FIELDS, for a reply), or those the
-- scripts need (LOADED: no payload), as a table by name; nil if unknown.
local function read(q, id, names)
  local values = redis.call('HMGET', job_key(q, id), unpack(names))
  if not values[1] then return nil end
  local j = {}
  for i, name in ipairs(names) do
    if values[i] then j[name] = values[i] end
  end
  return j
end
local function load(q, id) return read(q, id, LOADED) end
local function reply(q, id) return redis.call('HMGET', job_key(q, id), unpack(FIELDS)) end
-- Where each field is in a reply.
local FIELD_AT = {}
for i, name in ipairs(FIELDS) do FIELD_AT[name] = i end

-- The queues of `ids` (false for an unknown one), in one HMGET per 1,000.
local function queues_of(ids)
  local out = {}
  for i = 1, #ids, 1000 do
    local step = redis.call('HMGET', JOBS, unpack(ids, i, math.min(i + 999, #ids)))
    for _, q in ipairs(step) do out[#out + 1] = q end
  end
  return out
end

-- The queue of job `id` and the job (its LOADED fields, or `names`, which
-- start with 'id'), or nil.
local function find(id, names)
  local q = redis.call('HGET', JOBS, id)
  if not q then return nil end
  local j = read(q, id, names or LOADED)
  if not j then return nil end
  return q, j
end

-- A ready job's member in its type's ZSET: equal priorities sort by due
-- time, then enqueue order.
local function ready_member(ra, sq, id)
  return string.format('%016d%016d', ra, sq) .. id
end

-- Flow control (see the key layout above, and the broker's flow.rs for
-- the rules, which `key_hold` and the buckets here follow to the letter).
local flowed_cache = {}
local function flowed(q)
  local f = flowed_cache[q]
  if f == nil then
    f = redis.call('EXISTS', qkey(q, 'limits')) == 1
    flowed_cache[q] = f
  end
  return f
end
-- The set of type t's ready jobs of lane `lane` (a key, or '' for none).
local function lane_key(q, t, lane)
  if lane == '' then return ready_key(q, t) end
  return qkey(q, 'rk:' .. #t .. ':' .. t .. lane)
end
local function ring_key(q, t) return qkey(q, 'ring:' .. t) end
-- The turn a lane that gets ready jobs joins the ring at: after the others.
local function current_turn(q)
  return tonumber(redis.call('HGET', qkey(q, 'flow'), 'turn') or '0')
end

-- Adds ready job j to its type's set (its lane's, under flow control);
-- `seen` (optional) the types of this queue already noted in
-- sluice:{Q}:types by the calling script.
local function add_ready(q, j, seen)
  local member = ready_member(tonumber(j.ra), tonumber(j.sq), j.id)
  if flowed(q) then
    local lane = j.fk or ''
    write('ZADD', lane_key(q, j.t, lane), -tonumber(j.pr), member)
    redis.call('ZADD', ring_key(q, j.t), 'NX', current_turn(q), lane)
  else
    write('ZADD', ready_key(q, j.t), -tonumber(j.pr), member)
  end
  if not (seen and seen[j.t]) then
    write('SADD', qkey(q, 'types'), j.t)
    if seen then seen[j.t] = true end
  end
end

-- Forgets type t of queue q if it has no ready job left.
local function drop_type_if_empty(q, t)
  if redis.call('ZCARD', ready_key(q, t)) == 0
    and (not flowed(q) or redis.call('ZCARD', ring_key(q, t)) == 0) then
    redis.call('SREM', qkey(q, 'types'), t)
  end
end

-- Takes lane `lane` of type t out of the ring if it has no ready job left.
local function drop_lane_if_empty(q, t, lane)
  if redis.call('ZCARD', lane_key(q, t, lane)) == 0 then
    redis.call('ZREM', ring_key(q, t), lane)
  end
end

local function remove_ready(q, j)
  local member = ready_member(tonumber(j.ra), tonumber(j.sq), j.id)
  if flowed(q) then
    local lane = j.fk or ''
    redis.call('ZREM', lane_key(q, j.t, lane), member)
    drop_lane_if_empty(q, j.t, lane)
  else
    redis.call('ZREM', ready_key(q, j.t), member)
  end
  drop_type_if_empty(q, j.t)
end

-- Moves job j from its state's list to state `to`'s (nil: out); `fields`
-- (optional: name, value, ...) are set in the same HSET as the state.
local function move(q, j, to, fields)
  if j.s then write('ZREM', qkey(q, 'st:' .. j.s), j.id) end
  if to then
    write('ZADD', qkey(q, 'st:' .. to), j.sq, j.id)
    redis.call('HSET', job_key(q, j.id), 's', to, unpack(fields or {}))
  end
  j.s = to
end

-- Queue q has a deadline at `at` (a scheduled job, a lease, a finished
-- job's retention): sluice:due moves earlier if it is later. (Once per
-- queue in a script's run, unless a deadline is earlier still.)
local due_noted = {}
local function due_at(q, at)
  local noted = due_noted[q]
  if noted and noted <= at then return end
  due_noted[q] = at
  redis.call('ZADD', DUE, 'LT', at, q)
end

-- Ends the lease of leased job j: out of the leased jobs and its broker's
-- held set; the stream's broker is told if it is another. (The job's
-- lease fields stay until the next lease: they are read only while it is
-- LEASED.)
local flow_woken = false
local function end_lease(q, j)
  write('ZREM', qkey(q, 'l'), j.id)
  if flowed(q) then
    if j.fk and redis.call('HINCRBY', qkey(q, 'kf'), j.fk, -1) <= 0 then
      redis.call('HDEL', qkey(q, 'kf'), j.fk)
    end
    -- Its slot may let a held job go, on any broker.
    if not flow_woken then
      redis.call('PUBLISH', WAKE_CHANNEL, 'ready')
      flow_woken = true
    end
  end
  if j.b then
    local entry = j.st .. ':' .. j.id
    write('SREM', held_key(j.b), entry)
    if j.b ~= ME then redis.call('PUBLISH', FREED_PREFIX .. j.b, entry) end
  end
end

-- Takes unfinished job j out of the structures of its state.
local function unlist(q, j)
  if j.s == 'ready' then remove_ready(q, j)
  elseif j.s == 'scheduled' then redis.call('ZREM', qkey(q, 's'), j.id)
  elseif j.s == 'leased' then end_lease(q, j)
  end
end

-- Frees j's idempotency key, if j holds it.
local function free_key(q, j)
  if j.k and redis.call('HGET', qkey(q, 'k'), j.k) == j.id then
    redis.call('HDEL', qkey(q, 'k'), j.k)
  end
end

-- Finishes job j (taken out of its unfinished structures already) in
-- `state`, with `err` as its last error and `result` as its result if
-- given (and not empty).
local function finish(q, j, state, now, err, result)
  local fields = {'ft', int(now)}
  if err then fields[#fields + 1], fields[#fields + 2] = 'e', err end
  if result and result ~= '' then fields[#fields + 1], fields[#fields + 2] = 'rs', result end
  move(q, j, state, fields)
  write('ZADD', qkey(q, 'f'), now, j.id)
  free_key(q, j)
  due_at(q, now + RETENTION_US)
end

-- How many jobs of queue q are in `state`.
local function count(q, state)
  return redis.call('ZCARD', qkey(q, 'st:' .. state))
end

-- The queue's unfinished jobs.
local function unfinished(q)
  local n = 0
  for _, state in ipairs(UNFINISHED) do n = n + count(q, state) end
  return n
end

-- Notes queue q for the sweep if it holds no job.
local function maybe_empty(q)
  if unfinished(q) == 0 and redis.call('ZCARD', qkey(q, 'f')) == 0 then
    redis.call('SADD', EMPTY, q)
  end
end

-- Deletes job j and every trace of it.
local function remove(q, j)
  if j.s == 'succeeded' or j.s == 'dead' or j.s == 'cancelled' then
    redis.call('ZREM', qkey(q, 'f'), j.id)
  else
    unlist(q, j)
  end
  move(q, j, nil)
  free_key(q, j)
  redis.call('DEL', job_key(q, j.id))
  redis.call('HDEL', JOBS, j.id)
  maybe_empty(q)
end

-- Makes j, taken out of its state's structures, READY (`ra` its due time).
-- (`fields`: more to set, as for move.)
local function make_ready(q, j, ra, fields, seen)
  j.ra = int(ra)
  local all = {'ra', j.ra}
  for _, v in ipairs(fields or {}) do all[#all + 1] = v end
  move(q, j, 'ready', all)
  add_ready(q, j, seen)
end

-- Makes j, taken out of its state's structures, SCHEDULED for `ra`.
local function schedule(q, j, ra, fields)
  j.ra = int(ra)
  local all = {'ra', j.ra}
  for _, v in ipairs(fields or {}) do all[#all + 1] = v end
  move(q, j, 'scheduled', all)
  write('ZADD', qkey(q, 's'), ra, j.id)
  due_at(q, ra)
end

-- Sets queue q's next deadline in sluice:due, exactly.
local function redue(q)
  local best
  local function consider(key, add)
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] then
      local at = tonumber(head[2]) + add
      if not best or at < best then best = at end
    end
  end
  consider(qkey(q, 's'), 0)
  consider(qkey(q, 'l'), 0)
  consider(qkey(q, 'f'), RETENTION_US)
  if best then redis.call('ZADD', DUE, best, q) else redis.call('ZREM', DUE, q) end
end

-- Tells every broker that jobs became READY or were scheduled.
local function wake(ready, scheduled)
  if ready then redis.call('PUBLISH', WAKE_CHANNEL, 'ready') end
  if scheduled then redis.call('PUBLISH', WAKE_CHANNEL, 'scheduled') end
end

-- The lease check every lease operation starts with: the queue and the
-- job (as find reads it; `q` if the caller read the job's queue), or the
-- refusal to return (unknown job, or a stale lease).
local function leased(id, lease, names, q)
  local j
  if q then j = read(q, id, names or LOADED) else q, j = find(id, names) end
  if not q or not j then return nil, nil, {'unknown'} end
  if j.s ~= 'leased' or j.li ~= lease then return nil, nil, {'stale', j.s} end
  return q, j, nil
end

-- Schedules: whether NAME is at revision EXPECT ('' for absent), and a write.
local function schedule_key(name) return 'sluice:schedule:' .. name end
local function schedule_at(name, expect)
  local r = redis.call('HGET', schedule_key(name), 'r')
  if expect == '' then return not r end
  return r == expect
end
local function schedule_write(name, r, n, b)
  redis.call('HSET', schedule_key(name), 'r', r, 'n', n, 'b', b)
  redis.call('SADD', SCHEDULES, name)
  if n == '' then
    redis.call('ZREM', SCHEDULES_DUE, name)
  else
    redis.call('ZADD', SCHEDULES_DUE, n, name)
  end
end

-- Source groups: a hash per row (r revision, e epoch, p position, b body)
-- and a set of each group's keys. Group names hold no '/'.
local function source_set(group) return 'sluice:sources:' .. group end
local function source_key(group, key) return 'sluice:source:' .. group .. '/' .. key end

-- Flow control's rules, as the broker's (sluice_queue::flow) has them:
-- a bucket {tokens, at} gains rate.per_second tokens a second up to
-- rate.burst, and starts full; a key is held while a worker holds it back,
-- while it has its limit in flight, or while its bucket lacks a token.
local TOKEN_SLACK = 1e-9
local function tokens_at(b, rate, now)
  if not b then return rate.burst end
  local t = b[1] + (now - b[2]) / 1e6 * rate.per_second
  if t > rate.burst then t = rate.burst end
  return t
end
-- When a whole token is there (nil: now).
local function token_wait(b, rate, now)
  local missing = 1 - tokens_at(b, rate, now)
  if missing <= TOKEN_SLACK then return nil end
  return now + math.ceil(missing / rate.per_second * 1e6)
end
local function take_token(b, rate, now)
  local t = tokens_at(b, rate, now) - 1
  if t < 0 then t = 0 end
  return {t, now}
end
local function parse_bucket(text)
  if not text then return nil end
  local tokens, at = string.match(text, '^(%S+) (%S+)$')
  if not tokens then return nil end
  return {tonumber(tokens), tonumber(at)}
end
local function bucket_text(b) return string.format('%.17g %d', b[1], b[2]) end
-- A key's in-flight limit, rate and weight.
local function key_limits(L, key)
  local o = L.overrides and L.overrides[key]
  local max, rate, weight = L.key_max_in_flight, L.key_rate, 1
  if o then
    if o.max_in_flight ~= nil then max = o.max_in_flight end
    if o.rate ~= nil then rate = o.rate end
    if o.weight ~= nil and o.weight > 1 then weight = o.weight end
  end
  return max, rate, weight
end
-- Why key `key` is held ('key_delay', 'key_limit', 'rate') and until
-- when, or nil.
local function key_hold(L, key, in_flight, held_until, b, now)
  if held_until and held_until > now then return 'key_delay', held_until end
  local max, rate = key_limits(L, key)
  if max ~= nil and in_flight >= max then return 'key_limit', nil end
  if rate ~= nil then
    local wait = token_wait(b, rate, now)
    if wait then return 'rate', wait end
  end
  return nil, nil
end

-- Puts queue q under flow control with `limits` (JSON): its keyed ready
-- jobs move to their lanes, every type's lanes join its ring, and its
-- keys' jobs in flight are counted. O(its ready and leased jobs), once.
local function make_flowed(q, limits)
  if flowed(q) then
    redis.call('SET', qkey(q, 'limits'), limits)
    return
  end
  redis.call('SET', qkey(q, 'limits'), limits)
  redis.call('SADD', LIMITED, q)
  flowed_cache[q] = true
  local turn = current_turn(q)
  for _, t in ipairs(redis.call('SMEMBERS', qkey(q, 'types'))) do
    local plain = ready_key(q, t)
    local members = redis.call('ZRANGE', plain, 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      local member = members[i]
      local fk = redis.call('HGET', job_key(q, string.sub(member, 33)), 'fk')
      if fk then
        redis.call('ZREM', plain, member)
        redis.call('ZADD', lane_key(q, t, fk), members[i + 1], member)
        redis.call('ZADD', ring_key(q, t), 'NX', turn, fk)
      end
    end
    if redis.call('ZCARD', plain) > 0 then redis.call('ZADD', ring_key(q, t), 'NX', turn, '') end
  end
  for _, id in ipairs(redis.call('ZRANGE', qkey(q, 'l'), 0, -1)) do
    local fk = redis.call('HGET', job_key(q, id), 'fk')
    if fk then redis.call('HINCRBY', qkey(q, 'kf'), fk, 1) end
  end
end

-- Takes queue q out of flow control: every ready job back in its type's
-- set, the flow keys gone.
local function make_plain(q)
  if not flowed(q) then return end
  for _, t in ipairs(redis.call('SMEMBERS', qkey(q, 'types'))) do
    local plain = ready_key(q, t)
    for _, lane in ipairs(redis.call('ZRANGE', ring_key(q, t), 0, -1)) do
      if lane ~= '' then
        local key = lane_key(q, t, lane)
        local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
        for i = 1, #members, 2 do redis.call('ZADD', plain, members[i + 1], members[i]) end
        redis.call('DEL', key)
      end
    end
    redis.call('DEL', ring_key(q, t))
  end
  redis.call('DEL', qkey(q, 'limits'), qkey(q, 'flow'), qkey(q, 'kf'), qkey(q, 'kh'),
    qkey(q, 'kb'))
  redis.call('SREM', LIMITED, q)
  flowed_cache[q] = false
end

-- Holds every job of key `key` of queue q until `till` (a later hold
-- wins); the queue comes under flow control (with no limits) if it was not.
local function hold_key(q, key, till)
  if not flowed(q) then make_flowed(q, '{}') end
  local held = tonumber(redis.call('HGET', qkey(q, 'kh'), key) or '0')
  if till > held then redis.call('HSET', qkey(q, 'kh'), key, int(till)) end
  redis.call('PUBLISH', WAKE_CHANNEL, 'ready')
end
