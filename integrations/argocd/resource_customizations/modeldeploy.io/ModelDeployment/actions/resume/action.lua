-- Resume: reconciliation goes on from the observed state.
obj.spec.paused = false
return obj
