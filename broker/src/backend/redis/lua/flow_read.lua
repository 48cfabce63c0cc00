-- Flow read: queue q's limits and keys. ARGV: queue, whether to read its
-- keys ('1'). Answers {limits JSON ('' for none), now in us, its bucket
-- ("tokens at" or ''), its jobs leased, per key {key, in flight, ready,
-- held until in us or '', bucket or ''}, its ready jobs without a key}.
-- Keys are counted only under flow control.
local q, with_keys = ARGV[3], ARGV[4] == '1'
local now = now_us()
local limits = redis.call('GET', qkey(q, 'limits'))
if not limits then return {'', int(now), '', 0, {}, 0} end
local flow = redis.call('HMGET', qkey(q, 'flow'), 'tokens', 'at')
local bucket = ''
if flow[1] then bucket = flow[1] .. ' ' .. flow[2] end
local rows, keyless = {}, 0
if with_keys then
  local keys = {}
  local function of(name)
    local k = keys[name]
    if not k then
      k = {name, 0, 0, '', ''}
      keys[name] = k
    end
    return k
  end
  for _, t in ipairs(redis.call('SMEMBERS', qkey(q, 'types'))) do
    keyless = keyless + redis.call('ZCARD', ready_key(q, t))
    for _, lane in ipairs(redis.call('ZRANGE', ring_key(q, t), 0, -1)) do
      if lane ~= '' then
        local k = of(lane)
        k[3] = k[3] + redis.call('ZCARD', lane_key(q, t, lane))
      end
    end
  end
  local kf = redis.call('HGETALL', qkey(q, 'kf'))
  for i = 1, #kf, 2 do of(kf[i])[2] = tonumber(kf[i + 1]) end
  local kh = redis.call('HGETALL', qkey(q, 'kh'))
  for i = 1, #kh, 2 do
    if tonumber(kh[i + 1]) > now then of(kh[i])[4] = kh[i + 1] end
  end
  local names = {}
  for name in pairs(keys) do names[#names + 1] = name end
  if #names > 0 then
    local kb = redis.call('HMGET', qkey(q, 'kb'), unpack(names))
    for i, name in ipairs(names) do
      if kb[i] then keys[name][5] = kb[i] end
      rows[#rows + 1] = keys[name]
    end
  end
end
return {limits, int(now), bucket, redis.call('ZCARD', qkey(q, 'l')), rows, keyless}
