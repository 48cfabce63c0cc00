-- Heartbeat: renews this broker's record (its streams, with a TTL) and
-- counters, and forgets the brokers whose record expired: their counters
-- are added to sluice:counters and their held leases forgotten (the
-- leases themselves expire and run again). ARGV: streams (JSON), counters
-- (JSON), TTL ms. Answers the brokers forgotten.
redis.call('SET', broker_key(ME), ARGV[3], 'PX', ARGV[5])
redis.call('SET', counters_key(ME), ARGV[4])
redis.call('SADD', BROKERS, ME)
local gone = {}
for _, b in ipairs(redis.call('SMEMBERS', BROKERS)) do
  if redis.call('EXISTS', broker_key(b)) == 0 then
    local counters = redis.call('GET', counters_key(b))
    if counters then
      for q, values in pairs(cjson.decode(counters)) do
        for i, v in ipairs(values) do redis.call('HINCRBY', COUNTERS, q .. '|' .. (i - 1), v) end
      end
    end
    redis.call('DEL', counters_key(b), held_key(b))
    redis.call('SREM', BROKERS, b)
    gone[#gone + 1] = b
  end
end
return gone
