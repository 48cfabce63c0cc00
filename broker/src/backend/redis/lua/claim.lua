-- Claim: leases up to `credit` ready jobs of the queues given (paused ones
-- left out) to a stream of this broker. Queues without flow control go
-- first, in the contract's order: priority, then due time, then enqueue
-- order. Then each queue under flow control (lib.lua) with the credit
-- left: its lanes in turn, least recently dealt first, each dealt up to
-- its weight while no limit holds it. ARGV: stream, worker, lease ms,
-- credit, the count of queues and the queues, the count of job types and
-- the types (none: any), then a lease id per job that may be claimed.
-- Answers {jobs claimed (each as FIELDS), when a limit that held jobs
-- ends in us ('' if none does), now in us}.
DEFER = true
local stream, worker, lease_ms, credit = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local at = 7
local queues = {}
for i = 1, tonumber(ARGV[at]) do queues[i] = ARGV[at + i] end
at = at + #queues + 1
local types = {}
for i = 1, tonumber(ARGV[at]) do types[i] = ARGV[at + i] end
at = at + #types + 1
local now = now_us()
local wake
local function note_wake(t)
  if t and (not wake or t < wake) then wake = t end
end
local function types_of(q)
  if #types == 0 then return redis.call('SMEMBERS', qkey(q, 'types')) end
  return types
end
-- Each pick: {member, its set, queue, type, lane ('' none; nil: plain)}.
local picks = {}
local candidates, lists = {}, 0
local limited = {}
for _, q in ipairs(queues) do
  if redis.call('SISMEMBER', PAUSED, q) == 0 then
    if flowed(q) then
      limited[#limited + 1] = q
    else
      for _, t in ipairs(types_of(q)) do
        local head = redis.call('ZRANGE', ready_key(q, t), 0, credit - 1, 'WITHSCORES')
        if #head > 0 then lists = lists + 1 end
        for i = 1, #head, 2 do
          candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], q, t}
        end
      end
    end
  end
end
-- One type's set comes in order already; several are merged.
if lists > 1 then
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
for i = 1, math.min(credit, #candidates) do
  local c = candidates[i]
  picks[#picks + 1] = {c[2], ready_key(c[3], c[4]), c[3], c[4], nil}
end

-- Lanes looked at per type and claim at most: keys held past that many
-- wait for a later claim.
local MAX_LANES = 512
-- The picks of queue q under flow control, with `budget` jobs at most.
local function claim_flowed(q, budget)
  local L = cjson.decode(redis.call('GET', qkey(q, 'limits')))
  if L.max_in_flight ~= nil then
    budget = math.min(budget, L.max_in_flight - redis.call('ZCARD', qkey(q, 'l')))
  end
  local flow = redis.call('HMGET', qkey(q, 'flow'), 'tokens', 'at', 'turn')
  local bucket
  if flow[1] then bucket = {tonumber(flow[1]), tonumber(flow[2])} end
  if L.rate ~= nil then
    local whole = math.floor(tokens_at(bucket, L.rate, now) + TOKEN_SLACK)
    if whole < 1 then note_wake(token_wait(bucket, L.rate, now)) end
    budget = math.min(budget, whole)
  end
  if budget <= 0 then return end
  local turn = tonumber(flow[3] or '0')
  local lanes, names, seen = {}, {}, {}
  -- The lanes next in turn: about as many as jobs to deal (one a lane is
  -- the common case; held lanes go to the back as they are met).
  local want_lanes = math.min(MAX_LANES, budget * 2 + 8)
  for _, t in ipairs(types_of(q)) do
    local ring = redis.call('ZRANGE', ring_key(q, t), 0, want_lanes - 1, 'WITHSCORES')
    for i = 1, #ring, 2 do
      lanes[#lanes + 1] = {tonumber(ring[i + 1]), ring[i], t}
      if ring[i] ~= '' and not seen[ring[i]] then
        seen[ring[i]] = true
        names[#names + 1] = ring[i]
      end
    end
  end
  table.sort(lanes, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  -- The keys' states, one read of each hash.
  local keys = {}
  if #names > 0 then
    local kf = redis.call('HMGET', qkey(q, 'kf'), unpack(names))
    local kh = redis.call('HMGET', qkey(q, 'kh'), unpack(names))
    local kb = redis.call('HMGET', qkey(q, 'kb'), unpack(names))
    for i, name in ipairs(names) do
      keys[name] = {in_flight = tonumber(kf[i] or '0'), held = tonumber(kh[i] or '0'),
        bucket = parse_bucket(kb[i]), taken = false}
    end
  end
  -- Passes over the lanes until the budget is spent or a pass deals
  -- nothing; `taken[i]` counts the jobs lane i gave so far.
  local dealt_lanes, taken = {}, {}
  local dealt_in_pass = true
  while budget > 0 and dealt_in_pass do
    dealt_in_pass = false
    for i, lane in ipairs(lanes) do
      if budget <= 0 then break end
      local name, t = lane[2], lane[3]
      local k = keys[name]
      local weight, rate = 1, nil
      if k then
        local _, r, w = key_limits(L, name)
        weight, rate = w, r
      end
      local set = lane_key(q, t, name)
      local from = taken[i] or 0
      local head = redis.call('ZRANGE', set, from, from + math.min(weight, budget) - 1)
      local n = 0
      for _, member in ipairs(head) do
        if k then
          local why, untl = key_hold(L, name, k.in_flight, k.held, k.bucket, now)
          if why then
            note_wake(untl)
            -- To the back of the ring: a claim looks at MAX_LANES lanes,
            -- and held ones must not keep the others out of sight.
            if n == 0 then
              turn = turn + 1
              redis.call('ZADD', ring_key(q, t), 'XX', turn, name)
            end
            break
          end
          if rate ~= nil then
            k.bucket = take_token(k.bucket, rate, now)
            k.taken = true
          end
          k.in_flight = k.in_flight + 1
        end
        picks[#picks + 1] = {member, set, q, t, name}
        n = n + 1
        budget = budget - 1
      end
      if n > 0 then
        dealt_in_pass = true
        taken[i] = from + n
        turn = turn + 1
        redis.call('ZADD', ring_key(q, t), 'XX', turn, name)
        dealt_lanes[#dealt_lanes + 1] = {t, name}
        if L.rate ~= nil then
          for _ = 1, n do bucket = take_token(bucket, L.rate, now) end
        end
      end
    end
  end
  local fields = {'turn', int(turn)}
  if bucket then
    fields[#fields + 1], fields[#fields + 2] = 'tokens', string.format('%.17g', bucket[1])
    fields[#fields + 1], fields[#fields + 2] = 'at', int(bucket[2])
    if L.rate ~= nil then note_wake(token_wait(bucket, L.rate, now)) end
  end
  redis.call('HSET', qkey(q, 'flow'), unpack(fields))
  for name, k in pairs(keys) do
    if k.taken then redis.call('HSET', qkey(q, 'kb'), name, bucket_text(k.bucket)) end
  end
  return dealt_lanes
end

local emptied = {}
for _, q in ipairs(limited) do
  local left = credit - #picks
  if left <= 0 then break end
  local dealt = claim_flowed(q, left)
  for _, d in ipairs(dealt or {}) do emptied[#emptied + 1] = {q, d[1], d[2]} end
end

local expires = int(now + lease_ms * 1000)
local out, queues_touched, types_touched = {}, {}, {}
for i, p in ipairs(picks) do
  local member, set, q, t, lane = p[1], p[2], p[3], p[4], p[5]
  local id = string.sub(member, 33)
  local key = job_key(q, id)
  -- The reply, read once and then given the lease.
  local job = redis.call('HMGET', key, unpack(FIELDS))
  local lease, attempt = ARGV[at + i - 1], int(tonumber(job[FIELD_AT.a]) + 1)
  write('ZREM', set, member)
  write('ZREM', qkey(q, 'st:ready'), id)
  write('ZADD', qkey(q, 'st:leased'), job[FIELD_AT.sq], id)
  redis.call('HSET', key, 's', 'leased', 'a', attempt, 'li', lease, 'w', worker, 'b', ME,
    'st', stream, 'lm', lease_ms, 'le', expires)
  write('ZADD', qkey(q, 'l'), expires, id)
  write('SADD', held_key(ME), stream .. ':' .. id)
  if lane and lane ~= '' then redis.call('HINCRBY', qkey(q, 'kf'), lane, 1) end
  job[FIELD_AT.s], job[FIELD_AT.a] = 'leased', attempt
  job[FIELD_AT.li], job[FIELD_AT.w], job[FIELD_AT.le] = lease, worker, expires
  queues_touched[q] = true
  types_touched[q .. '\0' .. t] = {q, t}
  out[#out + 1] = job
end
flush()
for _, e in ipairs(emptied) do drop_lane_if_empty(e[1], e[2], e[3]) end
for _, qt in pairs(types_touched) do drop_type_if_empty(qt[1], qt[2]) end
for q in pairs(queues_touched) do due_at(q, expires) end
local woken = ''
if wake then woken = int(wake) end
return {out, woken, int(now)}
