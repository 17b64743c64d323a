"""An agent whose broker is away or refuses it keeps retrying with back-off, says so in
its log, and comes online when the broker does. Real Mosquitto, real agent process."""

from __future__ import annotations

from tests.agent.world import World, files_component, install_version
from tests.support.processes import wait_until


def test_an_agent_started_before_its_broker_connects_when_the_broker_comes(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    world.broker.process.stop()
    agent = world.agent("dev-1", {"app": files_component(target)}, start=False)
    agent.start()
    wait_until(lambda: "cannot reach broker" in agent.log_tail(), 20,
             lambda: f"no retry logged:\n{agent.log_tail()}")
    world.broker.process.start()
    world.wait_online(agent, timeout=90)
    assert world.controller.version("dev-1") == "1.0.0"


def test_a_refused_login_is_logged_and_retried(world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)}, start=False)
    agent.config["broker"]["username"] = "dev-2"  # dev-1's password is not dev-2's
    agent.start()
    wait_until(lambda: agent.log_tail().count("refused the connection") >= 2, 30,
             lambda: f"no refusals logged:\n{agent.log_tail()}")
    assert agent.proc is not None and agent.proc.poll() is None
    assert "dev-1" not in world.controller.online


def test_online_is_false_after_a_clean_stop_and_by_the_last_will_after_a_kill(
        world: World) -> None:
    target = world.root / "app"
    install_version(target, "1.0.0", {"app.txt": "one"})
    agent = world.agent("dev-1", {"app": files_component(target)})
    assert agent.stop() == 0
    wait_until(lambda: world.controller.online.get("dev-1") is False, 10, "no online=false")
    agent.start()
    world.wait_online(agent)
    agent.kill()  # no goodbye: the broker sees the socket drop and publishes the will
    wait_until(lambda: world.controller.online.get("dev-1") is False, 30, "no last will")
