-- Roll back to a revision number from status.history. The `revision` parameter picks it on Argo CD versions
-- with action parameters (the actionParams global); without one, the previous revision is used.
local status = obj.status or {}
local rollout = status.rollout or {}

local function previous_revision_number()
  if status.history == nil then
    return nil
  end
  for _, entry in ipairs(status.history) do
    if entry.revision ~= nil and entry.revision == rollout.previousRevision and entry.number ~= nil then
      return entry.number
    end
  end
  for _, entry in ipairs(status.history) do
    if entry.revision ~= status.stableRevision and entry.number ~= nil then
      return entry.number
    end
  end
  return nil
end

local target = nil
if actionParams ~= nil and actionParams["revision"] ~= nil and actionParams["revision"] ~= "" then
  target = tonumber(actionParams["revision"])
  if target == nil or target < 1 or target % 1 ~= 0 then
    error("revision must be a positive whole number, got " .. tostring(actionParams["revision"]), 0)
  end
else
  target = previous_revision_number()
  if target == nil then
    error("no previous revision to roll back to (status.history has none)", 0)
  end
end

local known = false
if status.history ~= nil then
  for _, entry in ipairs(status.history) do
    if entry.number == target then
      known = true
    end
  end
end
if not known then
  error("revision " .. tostring(target) .. " is not in status.history", 0)
end

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/rollback-to"] = tostring(target)
return obj
