"""The dashboard in a real headless Chromium against a real `fleetwave run`.

Real processes throughout: Mosquitto with the shipped configuration, the
controller on SQLite with a folder source and a token file, `fleetwave simulate`
devices, and Debian's Chromium driven by selenium. The tests act as an operator
would (click, type, confirm) and check what the API says afterwards; axe-core
checks every page's markup (labels, roles, contrast) as the browser shows it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from tests.dashboard.conftest import accessibility_violations
from tests.support.processes import Controller, Simulator, wait_until

pytestmark = pytest.mark.slow

NAME = "agent-rollout"


def rollout_yaml(*, max_in_flight: int, pause: str = "2s") -> str:
    return f"""\
apiVersion: fleetwave.io/v1alpha1
kind: Rollout
metadata: {{name: {NAME}}}
spec:
  component: agent
  version: "1.0.6"
  selector: {{}}
  strategy:
    steps: [{{percent: 5}}, {{percent: 25, pause: {pause}}}, {{percent: 50, pause: {pause}}},
            {{percent: 100}}]
    maxInFlight: {max_in_flight}
  health: {{ackTimeout: 15s, updateTimeout: 30s, stableFor: 1s}}
  failurePolicy: {{maxFailurePercent: 60, minSample: 10, retries: 0}}
"""


def start(tmp_path: Path, controller_factory: Callable[..., Controller],
          simulator_factory: Callable[..., Simulator], devices: int,
          *simulator_args: str) -> tuple[Controller, Path]:
    """A controller with an empty source and a fleet that has reported in."""
    source = tmp_path / "rollouts"
    source.mkdir()
    simulator_factory(devices, "--seed", "5", *simulator_args)
    controller = controller_factory(source)
    controller.start()
    wait_until(lambda: len(controller.devices()) == devices, 60,
               lambda: f"the fleet did not report in; {controller.tail()}")
    return controller, source


def text_of(driver: webdriver.Chrome, css: str) -> str | None:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def settled(action: Callable[[], Any], what: str) -> Any:
    """`action` on elements a live redraw may replace meanwhile: again until it holds."""
    def attempt() -> tuple[Any] | None:
        try:
            return (action(),)
        except (StaleElementReferenceException, NoSuchElementException):
            return None
    return wait_until(attempt, 20, f"could not {what}")[0]


def console_errors(driver: webdriver.Chrome, allowed: tuple[str, ...] = ()) -> list[Any]:
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def api_phase(controller: Controller) -> str | None:
    rollout = controller.get(f"/api/v1/rollouts/{NAME}", ok_only=False)
    if not isinstance(rollout, dict) or "name" not in rollout:
        return None  # not read from the source yet
    return str(rollout["status"].get("phase"))


def row_texts(driver: webdriver.Chrome, css: str) -> list[str] | None:
    """The rows' texts, or None while a live redraw replaces them."""
    try:
        return [str(r.text) for r in driver.find_elements(By.CSS_SELECTOR, css)]
    except StaleElementReferenceException:
        return None


def test_the_list_shows_a_rollout_move_through_its_waves_live_and_a_device_its_history(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator], browser: webdriver.Chrome) -> None:
    controller, source = start(tmp_path, controller_factory, simulator_factory, 200,
                               "--speed", "8", "--fail-rate", "0.05")
    browser.get(controller.url + "/")
    wait_until(lambda: text_of(browser, "#live") == "live", 20, "the stream never said hello")
    browser.execute_script("window.notReloaded = true;")
    (source / "agent.yaml").write_text(rollout_yaml(max_in_flight=20))

    seen: list[tuple[str | None, str | None]] = []

    def completed() -> bool:
        row = f'tr[data-rollout="{NAME}"]'
        state = (text_of(browser, f"{row} .phase-cell"), text_of(browser, f"{row} .step"))
        if state[0] is not None and (not seen or seen[-1] != state):
            seen.append(state)
        return state[0] == "Completed"

    wait_until(completed, 240, lambda: f"not completed in the page; seen {seen}; API "
                                       f"{controller.rollout(NAME)['status']}",
               interval=0.2)
    steps = {step for _, step in seen}
    assert len(steps) >= 3, f"the page showed too few steps on the way: {seen}"
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded"
    maxima = settled(lambda: [b.get_attribute("aria-valuemax") for b in browser.find_elements(
        By.CSS_SELECTOR, f'tr[data-rollout="{NAME}"] [role=progressbar]')], "read the bars")
    assert len(maxima) == 4 and int(maxima[-1] or 0) > 0
    assert accessibility_violations(browser) == []

    # Into the rollout, then to a device, with the keyboard as well as links.
    settled(lambda: browser.find_element(By.LINK_TEXT, NAME).send_keys(Keys.ENTER),
            "follow the rollout's link")
    wait_until(lambda: text_of(browser, "#phase") == "Completed", 20, "rollout page not drawn")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "table.devices tbody tr"), 20,
               "no device rows")
    timeline = settled(lambda: browser.find_element(By.CSS_SELECTOR, ".timeline").text,
                       "read the timeline")
    assert "StepStarted" in timeline
    plan = settled(lambda: browser.find_element(
        By.CSS_SELECTOR, "section[aria-labelledby=h-plan]").text, "read the plan")
    assert "Earliest start" in plan
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
    assert accessibility_violations(browser) == []
    Select(browser.find_element(By.ID, "f-state")).select_by_value("succeeded")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()

    def only_succeeded() -> bool:
        rows = row_texts(browser, "table.devices tbody tr")
        return bool(rows) and all(r.split()[2] == "succeeded" for r in rows or ())

    wait_until(only_succeeded, 20, "the state filter did not apply")

    def open_first_device() -> str:
        link = browser.find_element(By.CSS_SELECTOR, "table.devices tbody tr th a")
        text = str(link.text)
        link.click()
        return text

    uuid = settled(open_first_device, "open a device")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr"), 20,
               "no update history on the device page")
    history = settled(lambda: browser.find_element(By.CSS_SELECTOR, "table.history tbody tr")
                      .text, "read the history")
    assert NAME in history and "succeeded" in history and "completed" in history, history
    assert "1.0.5 → 1.0.6" in history
    assert text_of(browser, "#online") == "online"
    assert accessibility_violations(browser) == []
    api_history = controller.get(f"/api/v1/devices/{uuid}/updates")["items"]
    assert api_history[0]["state"] == "succeeded"

    browser.find_element(By.LINK_TEXT, "Fleet").click()
    wait_until(lambda: text_of(browser, "#online-count") == "200", 20, "fleet page not drawn")
    assert "1.0.6" in settled(lambda: browser.find_element(
        By.CSS_SELECTOR, "svg.hbars").get_attribute("aria-label"), "read the chart")
    assert accessibility_violations(browser) == []
    assert console_errors(browser) == []


def post_as(controller: Controller, path: str, token: str) -> int:
    request = urllib.request.Request(controller.url + path, data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def click_and_confirm(browser: webdriver.Chrome, op: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f"button[data-op={op}]").click()
    wait_until(lambda: browser.find_element(By.ID, "confirm").get_attribute("open") is not None,
               10, "no confirmation asked")
    browser.find_element(By.ID, "confirm-ok").click()


def test_control_buttons_refuse_without_the_token_and_pause_with_it(
        tmp_path: Path, controller_factory: Callable[..., Controller],
        simulator_factory: Callable[..., Simulator], browser: webdriver.Chrome) -> None:
    controller, source = start(tmp_path, controller_factory, simulator_factory, 100,
                               "--speed", "2")
    (source / "agent.yaml").write_text(rollout_yaml(max_in_flight=2))
    wait_until(lambda: api_phase(controller) == "Progressing", 30, "rollout did not start")
    browser.get(f"{controller.url}/#/rollouts/{NAME}")
    wait_until(lambda: text_of(browser, "#phase") == "Progressing", 20, "page not drawn")

    # Cancelling the confirmation sends nothing.
    browser.find_element(By.CSS_SELECTOR, "button[data-op=pause]").click()
    browser.find_element(By.ID, "confirm-cancel").click()
    assert browser.find_element(By.ID, "confirm").get_attribute("open") is None

    # No token: the API refuses, and the page shows its message.
    click_and_confirm(browser, "pause")
    wait_until(lambda: "refused (401)" in (text_of(browser, ".controls .outcome") or ""), 20,
               lambda: f"no refusal shown: {text_of(browser, '.controls .outcome')}")
    assert "bearer token" in (text_of(browser, ".controls .outcome") or "")
    events = controller.get(f"/api/v1/rollouts/{NAME}/events?limit=1000")["items"]
    assert not [e for e in events if e["reason"] == "Paused"]
    assert api_phase(controller) == "Progressing"

    # A wrong token: refused as well, with the API's own reason.
    browser.find_element(By.ID, "token").send_keys("not-the-token", Keys.ENTER)
    click_and_confirm(browser, "pause")
    wait_until(lambda: "refused (403)" in (text_of(browser, ".controls .outcome") or ""), 20,
               lambda: f"no refusal shown: {text_of(browser, '.controls .outcome')}")
    assert api_phase(controller) == "Progressing"

    # The right token, kept in session storage: paused, and the API says so.
    browser.find_element(By.ID, "signout").click()
    browser.find_element(By.ID, "token").send_keys(controller.token, Keys.ENTER)
    assert browser.execute_script(
        "return sessionStorage.getItem('fleetwave.token');") == controller.token
    click_and_confirm(browser, "pause")
    wait_until(lambda: api_phase(controller) == "Paused", 20,
               lambda: f"not paused: {controller.rollout(NAME)['status']}")
    events = controller.get(f"/api/v1/rollouts/{NAME}/events?limit=1000")["items"]
    assert [e["actor"] for e in events if e["reason"] == "Paused"] == ["api:token-1"]
    wait_until(lambda: text_of(browser, "#phase") == "Paused", 20, "the page missed the pause")

    # One device back to its previous version, from its row.
    Select(browser.find_element(By.ID, "f-state")).select_by_value("succeeded")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "button[data-key^=rollback-]"),
               30, "no succeeded device to roll back")

    def roll_back_first() -> str:
        button = browser.find_element(By.CSS_SELECTOR, "button[data-key^=rollback-]")
        key = str(button.get_attribute("data-key"))
        button.click()
        return key.removeprefix("rollback-")

    uuid = settled(roll_back_first, "click a device's Roll back")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_until(lambda: text_of(browser, ".controls .outcome") == f"Roll back device {uuid}: done.",
               20,
               lambda: f"rollback not done: {text_of(browser, '.controls .outcome')}")
    events = controller.get(f"/api/v1/rollouts/{NAME}/events?limit=1000")["items"]
    assert [(e["device"], e["actor"]) for e in events
            if e["reason"] == "DeviceRollbackRequested"] == [(uuid, "api:token-1")]

    # The controller restarts: the stream reconnects and the page refetches by itself.
    controller.stop()
    wait_until(lambda: text_of(browser, "#live") == "reconnecting…", 20,
               "the page did not notice the controller stopped")
    restarted = Controller(workdir=controller.workdir, broker=controller.broker,
                           port=controller.port, source=source, store=controller.store,
                           key_dir=controller.key_dir)  # the key its devices trust
    restarted.start()
    try:
        wait_until(lambda: text_of(browser, "#live") == "live", 30, "the stream did not reconnect")
        assert post_as(restarted, f"/api/v1/rollouts/{NAME}/resume", restarted.token) == 200
        wait_until(lambda: text_of(browser, "#phase") == "Progressing", 30,
                   lambda: f"the page did not follow the restarted controller: page "
                           f"{text_of(browser, '#phase')!r}, API {api_phase(restarted)!r}")
    finally:
        restarted.stop()
    # The refusals above, and requests made while the controller was down.
    expected = ("401 (Unauthorized)", "403 (Forbidden)", "/dashboard/api/stream",
                "net::ERR_CONNECTION_REFUSED")
    assert console_errors(browser, allowed=expected) == []
