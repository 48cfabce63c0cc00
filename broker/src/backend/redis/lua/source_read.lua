-- Source read: every row of a group. ARGV: the call's two, then the
-- group. Answers {key, revision, epoch, position ('' for none), body} per
-- row.
local group = ARGV[3]
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', source_set(group))) do
  local v = redis.call('HMGET', source_key(group, key), 'r', 'e', 'p', 'b')
  if v[1] then out[#out + 1] = {key, v[1], v[2], v[3] or '', v[4]} end
end
return out
