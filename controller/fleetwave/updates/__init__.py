"""Per-device update records and their state machine: pure, no I/O."""
