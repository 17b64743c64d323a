"""`python -m fleetwave` is the `fleetwave` command."""

from fleetwave.cli.main import main

if __name__ == "__main__":
    main()
