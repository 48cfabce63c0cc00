-- Schedule read. ARGV: 'all'; 'one', name; 'due', until (ms), limit; or
-- 'next'. Answers {name, revision, next tick, body} per schedule (by name
-- for 'all', by next tick for 'due'), or for 'next' the earliest next
-- tick (false if none).
local mode = ARGV[3]
local names
if mode == 'next' then
  local first = redis.call('ZRANGE', SCHEDULES_DUE, 0, 0, 'WITHSCORES')
  return first[2] or false
elseif mode == 'one' then
  names = {ARGV[4]}
elseif mode == 'due' then
  names = redis.call('ZRANGE', SCHEDULES_DUE, '-inf', ARGV[4], 'BYSCORE', 'LIMIT', 0, ARGV[5])
else
  names = redis.call('SMEMBERS', SCHEDULES)
  table.sort(names)
end
local out = {}
for _, name in ipairs(names) do
  local s = redis.call('HMGET', schedule_key(name), 'r', 'n', 'b')
  if s[1] then out[#out + 1] = {name, s[1], s[2], s[3]} end
end
return out
