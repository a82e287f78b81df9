-- each request a distinct X-Session-ID and optionally distinct X-Agent-Type
local counter = 0
nexttid = 0
setup = function(thread) thread:set("tid", nexttid); nexttid = nexttid + 1 end
request = function()
  counter = counter + 1
  local sid = (os.getenv("PFX") or "s") .. "-" .. tid .. "-" .. counter
  local hdrs = {["Content-Type"]="application/json", ["X-Session-ID"]=sid}
  if os.getenv("AGENT") == "1" then hdrs["X-Agent-Type"] = "agent-" .. tid .. "-" .. counter end
  return wrk.format("POST", "/v1/chat/completions", hdrs, '{"model":"m","messages":[{"role":"user","content":"hi ' .. sid .. '"}]}')
end
