-- Health of a modeldeploy.io ModelDeployment for Argo CD.
-- Runs without Lua's string library (Argo CD's default for custom health checks).
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function with_detail(summary, detail)
  if detail == nil or detail == "" then
    return summary
  end
  if summary == "" then
    return detail
  end
  return summary .. ": " .. detail
end

local function reason_or(c, default)
  if c.reason == nil or c.reason == "" then
    return default
  end
  return tostring(c.reason)
end

local status = obj.status
local spec = obj.spec or {}
local generation = obj.metadata.generation

-- 1. The operator has not looked at this spec yet.
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. text(generation)
  return hs
end

local rollout = status.rollout or {}
local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")

-- 2. Something is wrong and needs a person.
if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = with_detail("Invalid spec", ready.message)
  return hs
end
if rollout.phase == "RolledBack" then
  local rejected = status.currentRevision
  if rollout.rejectedRevisions ~= nil and #rollout.rejectedRevisions > 0 then
    rejected = rollout.rejectedRevisions[#rollout.rejectedRevisions].revision
  end
  hs.status = "Degraded"
  hs.message = with_detail("Rolled back: revision " .. text(rejected) .. " was rejected, serving "
    .. text(status.stableRevision), rollout.message)
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = with_detail(reason_or(degraded, "Degraded"), degraded.message)
  return hs
end
if status.phase == "Failed" or status.phase == "Degraded" then
  local detail = rollout.message
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    detail = ready.message
  end
  hs.status = "Degraded"
  hs.message = with_detail(text(status.phase), detail)
  return hs
end

-- 3. Deliberately waiting: paused by spec, or a canary waiting at a pause step.
if spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Reconciliation is paused (spec.paused)"
  return hs
end
if rollout.phase == "Paused" then
  local where = "Rollout paused"
  if rollout.currentStepIndex ~= nil then
    where = where .. " at step " .. text(rollout.currentStepIndex)
  end
  if rollout.canaryWeight ~= nil then
    where = where .. " with " .. text(rollout.canaryWeight) .. "% of traffic on the canary"
  end
  hs.status = "Suspended"
  hs.message = with_detail(where, rollout.message)
  return hs
end

-- 4. A rollout is moving.
if rollout.phase == "Progressing" or rollout.phase == "Analyzing" or rollout.phase == "Promoting"
    or rollout.phase == "RollingBack" then
  hs.status = "Progressing"
  hs.message = with_detail("Rollout " .. rollout.phase, rollout.message)
  return hs
end

-- 5. Serving the current spec.
if ready ~= nil and ready.status == "True" then
  if status.currentRevision ~= nil and status.currentRevision == status.stableRevision then
    hs.status = "Healthy"
    hs.message = text(status.readyReplicas) .. "/" .. text(status.replicas) .. " replicas ready, revision "
      .. text(status.stableRevision)
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Revision " .. text(status.currentRevision) .. " is not stable yet (stable: "
    .. text(status.stableRevision) .. ")"
  return hs
end

-- 6. Anything else is on its way (pods starting, conditions not set yet).
hs.status = "Progressing"
if ready ~= nil then
  hs.message = with_detail(reason_or(ready, "Not ready"), ready.message)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
