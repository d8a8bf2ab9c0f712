-- Actions offered on a modeldeploy.io ModelDeployment, enabled according to its status.
local actions = {}
local status = obj.status or {}
local rollout = status.rollout or {}
local phase = rollout.phase
local paused = obj.spec ~= nil and obj.spec.paused == true

local in_rollout = phase == "Progressing" or phase == "Paused" or phase == "Analyzing"

-- The revision number `rollback` targets by default: the previous revision, else the newest one that is
-- not the stable revision (status.history is newest first).
local default_target = nil
if status.history ~= nil then
  for _, entry in ipairs(status.history) do
    if entry.revision ~= nil and entry.revision == rollout.previousRevision and entry.number ~= nil then
      default_target = entry.number
      break
    end
  end
  if default_target == nil then
    for _, entry in ipairs(status.history) do
      if entry.revision ~= status.stableRevision and entry.number ~= nil then
        default_target = entry.number
        break
      end
    end
  end
end

actions["promote"] = {["disabled"] = not in_rollout, ["iconClass"] = "fa fa-fw fa-forward",
  ["displayName"] = "Promote (skip the remaining steps)"}
actions["abort"] = {["disabled"] = not (in_rollout or phase == "Promoting"), ["iconClass"] = "fa fa-fw fa-times-circle",
  ["displayName"] = "Abort the rollout"}
actions["pause"] = {["disabled"] = paused, ["iconClass"] = "fa fa-fw fa-pause-circle",
  ["displayName"] = "Pause reconciliation"}
actions["resume"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play-circle",
  ["displayName"] = "Resume reconciliation"}
local rollback = {["disabled"] = default_target == nil or phase == "RollingBack",
  ["iconClass"] = "fa fa-fw fa-undo", ["displayName"] = "Roll back to a revision"}
if default_target ~= nil then
  rollback["params"] = {{["name"] = "revision", ["default"] = tostring(default_target)}}
end
actions["rollback"] = rollback
return actions
