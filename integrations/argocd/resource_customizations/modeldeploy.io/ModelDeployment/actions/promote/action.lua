-- Promote: skip the remaining canary steps. Any new token works; a timestamp is unique enough.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/promote"] = os.date("!%Y-%m-%dT%XZ")
return obj
