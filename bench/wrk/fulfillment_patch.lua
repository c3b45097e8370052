-- PATCH /orders/{id}/fulfillment on an id drawn at random from IDS_FILE: one compare-free
-- update whose outbox row commits with it. The pickup location cycles over a few values so the
-- row keeps its size however many times it is updated.
local lib = dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk/lib.lua")
local ids

function init(args)
  lib.seed()
  ids = lib.load_ids()
end

function request()
  local body = string.format('{"pickupLocation":"Dock %d"}', math.random(9))
  return wrk.format("PATCH", "/orders/" .. ids[math.random(#ids)] .. "/fulfillment",
    { ["Content-Type"] = "application/json" }, body)
end
