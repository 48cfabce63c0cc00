-- Workers: the streams of every other live broker (JSON each).
local out = {}
for _, b in ipairs(redis.call('SMEMBERS', BROKERS)) do
  if b ~= ME then
    local streams = redis.call('GET', broker_key(b))
    if streams then out[#out + 1] = streams end
  end
end
return out
