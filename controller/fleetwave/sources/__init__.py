"""Where Rollouts come from: a local folder, a git repository, registry-triggered policies."""
