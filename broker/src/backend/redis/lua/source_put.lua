-- Source puts or deletes, each if its row is at the revision expected.
-- ARGV: the call's two, then the group, then seven per write: key,
-- expected revision ('' for absent), what ('delete'; 'position' to write
-- the position too; '' to keep a row's own), revision, epoch, position
-- ('' for none), body. Answers 1 per write if done, 0 if not.
local group = ARGV[3]
local out = {}
for i = 4, #ARGV, 7 do
  local key, expect = ARGV[i], ARGV[i + 1]
  local rk = source_key(group, key)
  local r = redis.call('HGET', rk, 'r')
  if (expect == '' and r) or (expect ~= '' and r ~= expect) then
    out[#out + 1] = 0
  elseif ARGV[i + 2] == 'delete' then
    redis.call('DEL', rk)
    redis.call('SREM', source_set(group), key)
    out[#out + 1] = 1
  else
    redis.call('HSET', rk, 'r', ARGV[i + 3], 'e', ARGV[i + 4], 'b', ARGV[i + 6])
    if ARGV[i + 2] == 'position' or not r then
      if ARGV[i + 5] ~= '' then
        redis.call('HSET', rk, 'p', ARGV[i + 5])
      else
        redis.call('HDEL', rk, 'p')
      end
    end
    redis.call('SADD', source_set(group), key)
    out[#out + 1] = 1
  end
end
return out
