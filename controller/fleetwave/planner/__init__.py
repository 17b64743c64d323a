"""The planner: desired + observed state + the clock -> a plan of actions. Pure, no I/O."""
