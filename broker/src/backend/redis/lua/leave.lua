-- Leave: this broker stops; its counters (ARGV: counters JSON) go to
-- sluice:counters and its record goes.
for q, values in pairs(cjson.decode(ARGV[3])) do
  for i, v in ipairs(values) do redis.call('HINCRBY', COUNTERS, q .. '|' .. (i - 1), v) end
end
redis.call('DEL', broker_key(ME), counters_key(ME), held_key(ME))
redis.call('SREM', BROKERS, ME)
return 'ok'
