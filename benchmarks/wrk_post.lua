-- wrk script: POST registration bodies from a generated table, round-robin.
-- The table is written by benchmarks/door.py into bodies.lua beside it.
local bodies = dofile(os.getenv("GELOMBANG_BODIES"))
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/registrations", nil, bodies[(counter % #bodies) + 1])
end
