"""`python -m fleetwave.agent --config FILE`: the agent without the `fleetwave` command."""

import sys

from fleetwave.agent.entry import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
