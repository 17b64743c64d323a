"""Simulated devices speaking the fleetwave protocol, with failure injection.

`SimulatedFleet` is the in-process API (tests, demo); `fleetwave simulate` runs one from the
command line. See `fleetwave.simulator.fleet` for how devices map to MQTT connections.
"""

from fleetwave.simulator.device import Behaviour, DeviceProfile, SimulatedDevice
from fleetwave.simulator.fleet import SimulatedFleet, SimulatorConfig, build_profiles, run_fleet

__all__ = ["Behaviour", "DeviceProfile", "SimulatedDevice", "SimulatedFleet", "SimulatorConfig",
           "build_profiles", "run_fleet"]
