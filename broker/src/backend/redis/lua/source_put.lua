-- Source puts or deletes, each if its row is at the revision expected.
-- ARGV: the call's two, then the group, then seven per write: key,
-- expected revision ('' for absent), '1' to delete (else ''), revision,
-- epoch, position ('' for none), body. Answers 1 per write if done, 0 if
-- not.
local group = ARGV[3]
local out = {}
for i = 4, #ARGV, 7 do
  local key, expect = ARGV[i], ARGV[i + 1]
  local rk = source_key(group, key)
  local r = redis.call('HGET', rk, 'r')
  if (expect == '' and r) or (expect ~= '' and r ~= expect) then
    out[#out + 1] = 0
  elseif ARGV[i + 2] == '1' then
    redis.call('DEL', rk)
    redis.call('SREM', source_set(group), key)
    out[#out + 1] = 1
  else
    redis.call('DEL', rk)
    local fields = {'r', ARGV[i + 3], 'e', ARGV[i + 4], 'b', ARGV[i + 6]}
    if ARGV[i + 5] ~= '' then
      fields[#fields + 1] = 'p'
      fields[#fields + 1] = ARGV[i + 5]
    end
    redis.call('HSET', rk, unpack(fields))
    redis.call('SADD', source_set(group), key)
    out[#out + 1] = 1
  end
end
return out
