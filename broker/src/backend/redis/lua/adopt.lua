-- Adopt: a stream that opens takes over the leases its worker says it
-- still holds (a worker that reconnected), up to its max in flight; the
-- stream that held them before, if its broker lives, frees their slots.
-- ARGV: stream, worker, most, then pairs (job id, lease id). Answers the
-- job ids adopted.
local stream, worker, most = ARGV[3], ARGV[4], tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 2 do
  if #out >= most then break end
  local q, j, refused = leased(ARGV[i], ARGV[i + 1])
  if not refused and j.w == worker then
    if j.b then
      local entry = j.st .. ':' .. j.id
      redis.call('SREM', held_key(j.b), entry)
      if j.b ~= ME then redis.call('PUBLISH', FREED_PREFIX .. j.b, entry) end
    end
    redis.call('HSET', job_key(q, j.id), 'b', ME, 'st', stream)
    redis.call('SADD', held_key(ME), stream .. ':' .. j.id)
    out[#out + 1] = j.id
  end
end
return out
