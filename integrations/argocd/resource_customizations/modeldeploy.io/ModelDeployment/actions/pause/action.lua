-- Pause: the operator stops reconciling this ModelDeployment; running pods are left as they are.
obj.spec.paused = true
return obj
