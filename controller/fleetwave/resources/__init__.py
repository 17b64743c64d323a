"""Resources: the schemas, typed models and loading of Rollout, RolloutPolicy, DeviceInventory."""
