-- wrk script: GET /pg/product/<random id in 1..ROWS>.
local rows = tonumber(os.getenv("ROWS") or "10000")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/pg/product/" .. math.random(1, rows))
end
