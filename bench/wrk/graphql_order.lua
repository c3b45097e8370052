-- POST /graphql: one order by id (drawn at random from IDS_FILE) with the full field set.
-- GQL_FLAVOR=service queries this service's `order(id:)`; GQL_FLAVOR=postgraphile queries
-- PostGraphile's `orderById(id:)` for the same columns (its JSONB columns are JSON scalars).
local lib = dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk/lib.lua")
local ids
local query

local SERVICE = [[query Order($id: ID!) { order(id: $id) { id storeNumber orderNumber customerId
 fulfillmentType fulfillmentDate subtotal discountTotal taxTotal fulfillmentCost grandTotal
 paymentStatus status
 lineItems { productId sku name quantity unitPrice lineTotal discountAmount }
 appliedDiscounts { discountId discountCode description discountType amount }
 customerSnapshot { customerId firstName lastName email phone loyaltyTier }
 fulfillmentDetails { type scheduledDate pickupLocation instructions
   deliveryAddress { street1 street2 city state postalCode country } }
 createdAt updatedAt } }]]

local POSTGRAPHILE = [[query Order($id: UUID!) { orderById(id: $id) { id storeNumber orderNumber
 customerId fulfillmentType fulfillmentDate subtotal discountTotal taxTotal fulfillmentCost
 grandTotal paymentStatus status lineItems appliedDiscounts customerSnapshot
 fulfillmentDetails createdAt updatedAt } }]]

function init(args)
  lib.seed()
  ids = lib.load_ids()
  local flavor = os.getenv("GQL_FLAVOR") or "service"
  if flavor == "postgraphile" then query = POSTGRAPHILE else query = SERVICE end
  query = lib.json_escape(query)
end

function request()
  local body = '{"query":"' .. query .. '","variables":{"id":"' .. ids[math.random(#ids)] .. '"}}'
  return wrk.format("POST", "/graphql", { ["Content-Type"] = "application/json" }, body)
end
