-- Ready: how many jobs are READY in the queues of ARGV that are not
-- paused, up to a most (the first argument).
local most, total = tonumber(ARGV[3]), 0
for i = 4, #ARGV do
  if redis.call('SISMEMBER', PAUSED, ARGV[i]) == 0 then
    total = total + count(ARGV[i], 'ready')
    if total >= most then return most end
  end
end
return total
