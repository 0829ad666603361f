-- Argo CD health of an fmbench.io/v1alpha1 Benchmark (one benchmark run).
--   Healthy      phase Succeeded (the message carries the recommendation)
--   Degraded     phase Failed (the operator's message says why)
--   Progressing  anything else: not picked up yet, Pending, Deploying, Running, Analyzing, Verifying
-- Runs in Argo CD's Lua 5.1 sandbox (gopher-lua): `obj` is the live object.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the fmbench-k8s operator to pick the Benchmark up"
  return hs
end

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = nil
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  local rec = status.recommendation
  if rec ~= nil and rec.variant ~= nil then
    local what = rec.variant
    if rec.instanceType ~= nil then
      what = what .. " on " .. rec.instanceType
    end
    if rec.instances ~= nil then
      what = what .. " x" .. string.format("%d", math.floor(rec.instances + 0.5))
    end
    if rec.costPer1kRequests ~= nil then
      what = what .. string.format(", $%.4f per 1k requests", rec.costPer1kRequests)
    end
    hs.message = "Succeeded: " .. what
  else
    hs.message = message or "Succeeded"
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message or "Benchmark failed"
  return hs
end

hs.status = "Progressing"
if message ~= nil then
  hs.message = phase .. ": " .. message
else
  hs.message = phase
end
return hs
