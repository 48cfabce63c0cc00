-- Extend: a lease runs on from now, by `by` ms or its own length ('').
-- ARGV: job id, lease id, by. Answers {'ok', new expiry in us, cancel
-- requested ('1' or '')}, {'unknown'} or {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
local by = tonumber(ARGV[5]) or tonumber(j.lm)
local expires = now_us() + by * 1000
redis.call('HSET', job_key(q, j.id), 'le', expires)
redis.call('ZADD', qkey(q, 'l'), expires, j.id)
return {'ok', int(expires), j.c or ''}
