-- Abort: stop the rollout and send all traffic back to the stable revision.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/abort"] = "true"
return obj
