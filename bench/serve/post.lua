-- wrk script for bench/serve: POST the JSON body in a file, the same request on every connection.
--   wrk ... -s post.lua URL -- BODY.json
function init(args)
  local f = assert(io.open(args[1], "rb"), "post.lua: cannot open the body file " .. tostring(args[1]))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function request()
  return req
end
