"""The console's web page in a real browser, against a real `titan console` process over a demo
ledger: sign-in, the desk's panels, the explain trace, a halt through the dialog (seen arriving
over the live subscription, then read back from the ledger), roles, revocation, and the layout at
desk sizes (screenshots in tests/e2e/console/screenshots/)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from adapters.console.auth import new_token, token_line
from adapters.sqlite.ledger import SQLiteLedger
from commands.ports import RecordFilter
from tests.browser_support import LAUNCH_ARGS, chromium_path
from tests.e2e.conftest import ROOT, titan_command
from tests.services import free_port

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots"
SIZES = ((1280, 800), (1920, 1080))
READY_S = 30.0
STOP_S = 10.0
TIMEOUT_MS = 10_000
LISTENING = re.compile(r"console: (http://127\.0\.0\.1:\d+/) ")


@dataclass
class Console:
    """A running `titan console` over a demo ledger, and the tokens it accepts."""

    url: str
    ledger: Path
    summary: dict[str, Any]
    tokens: dict[str, str]
    token_file: Path
    lines: dict[str, str] = field(default_factory=dict)

    def explain_json(self, subject: str) -> Any:
        result = titan_run(self.ledger.parent, "explain", subject, "--ledger", f"sqlite:///{self.ledger}", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def revoke(self, who: str) -> None:
        """Remove a token's line from the token file (the console re-reads it within a second)."""
        kept = [line for name, line in self.lines.items() if name != who]
        self.token_file.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_") or k == "TITAN_CORE"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def titan_run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*titan_command(), *args], capture_output=True, text=True, cwd=directory, env=_env(), timeout=300, check=False)


def write_tokens(path: Path, grants: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    """A token for each subject, and each one's line in the token file."""
    tokens = {who: new_token() for who in grants}
    lines = {who: token_line(who, roles, tokens[who]) for who, roles in grants.items()}
    path.write_text("\n".join(lines.values()) + "\n", encoding="utf-8")
    return tokens, lines


def start_console(directory: Path, ledger: Path, token_file: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """`titan console` as a child process; returns it once it listens, with its URL."""
    stderr_path = directory / f"console-{time.monotonic_ns()}.stderr"
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [*titan_command(), "console", "--ledger", f"sqlite:///{ledger}", "--tokens", str(token_file), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=directory, env=_env(),
        )
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        match = LISTENING.search(stderr_path.read_text(encoding="utf-8"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_console(process)
    raise AssertionError(f"`titan console` did not start (exit {process.poll()}):\n{stderr_path.read_text(encoding='utf-8')}")


def stop_console(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within STOP_S."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_S)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("console-page")
    ledger = directory / "demo.db"
    demo = titan_run(directory, "demo", "--ledger", f"sqlite:///{ledger}", "--json")
    assert demo.returncode == 0, demo.stderr
    token_file = directory / "tokens"
    tokens, lines = write_tokens(token_file, {"alice": ("operator", "auditor"), "victor": ("viewer",), "temp": ("operator",)})
    process, url = start_console(directory, ledger, token_file)
    try:
        yield Console(url, ledger, json.loads(demo.stdout), tokens, token_file, lines)
    finally:
        stop_console(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=list(LAUNCH_ARGS))
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Page
    problems: list[str]

    def assert_clean(self) -> None:
        """No script error and no Content-Security-Policy refusal while the page ran."""
        assert not self.problems, self.problems


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Any]:
    contexts = []

    def open_(width: int = 1280, height: int = 800) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        problems: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text or "Refused to" in message.text:
                problems.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        return Tab(page, problems)

    yield open_
    for context in contexts:
        context.close()


def sign_in(page: Page, console: Console, who: str) -> None:
    page.goto(console.url)
    page.get_by_test_id("login-token").fill(console.tokens[who])
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("who-subject")).to_have_text(who)
    expect(page.get_by_test_id("breaker-state")).to_be_visible()


def wait_live(page: Page) -> None:
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("live-head")).to_have_text(re.compile(r"^\d+$"))


def assert_no_horizontal_overflow(page: Page, view: str) -> None:
    """The page never scrolls sideways, and every panel of the view lies inside the viewport."""
    layout = page.evaluate(
        """(view) => ({
          scrollWidth: document.documentElement.scrollWidth,
          innerWidth: window.innerWidth,
          outside: [...document.querySelectorAll(`#${view} .panel, .topbar`)]
            .map((node) => [node.dataset.testid || node.className, node.getBoundingClientRect()])
            .filter(([, box]) => box.left < 0 || box.right > window.innerWidth + 0.5)
            .map(([name, box]) => `${name}: ${box.left}..${box.right}`),
        })""",
        view,
    )
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["outside"] == [], layout


def halt_records(ledger: Path) -> list[dict[str, Any]]:
    """Every recorded halt.v1 command, in ledger order, read through a read-only connection."""
    store = SQLiteLedger(str(ledger), read_only=True)
    found: list[dict[str, Any]] = []
    try:
        after = 0
        while True:
            records, reached = store.read_matching(after, 1000, RecordFilter(types=("command.recorded.v1",)))
            found += [r.envelope for r in records if r.envelope["data"]["command"]["type"] == "halt.v1"]
            if reached <= after or (not records and reached >= store.head()[0]):
                return found
            after = reached
    finally:
        store.close()


def test_operator_signs_in_reads_the_desk_explains_an_order_and_halts(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    sign_in(page, console, "alice")
    assert "token" not in page.url
    expect(page.get_by_test_id("who-roles")).to_contain_text("operator")
    expect(page.get_by_test_id("who-roles")).to_contain_text("auditor")
    assert page.evaluate("sessionStorage.getItem('titan.console.token')") == console.tokens["alice"]

    # The desk: the demo's breaker ends DEFENSIVE (tail risk), with three open positions.
    expect(page.get_by_test_id("breaker-state")).to_have_text("DEFENSIVE")
    expect(page.get_by_test_id("breaker-triggers")).to_contain_text("tail_risk")
    expect(page.get_by_test_id("breaker-transitions").locator("tbody tr")).not_to_have_count(0)
    expect(page.get_by_test_id("position-symbol")).to_have_text(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    expect(page.get_by_test_id("truth-score").first).to_have_text(re.compile(r"^\d+$"))
    expect(page.get_by_test_id("decisions").locator("tbody tr").first).to_be_visible()
    wait_live(page)

    # The explain trace of the demo's order, check for check as `titan explain --json` has it.
    order = console.summary["order_to_explain"]
    page.get_by_test_id("explain-input").fill(order)
    page.get_by_test_id("explain-submit").click()
    expect(page.get_by_test_id("explain-subject")).to_have_text(order)
    expected = console.explain_json(order)
    names = [check["check"] for check in expected["decision"]["checks"]]
    rows = page.get_by_test_id("explain-check")
    expect(rows).to_have_count(len(names))
    assert [rows.nth(i).get_attribute("data-check") for i in range(len(names))] == names
    policy_row = page.locator("[data-testid=explain-check][data-check=policy_hash]")
    expect(policy_row).to_have_attribute("data-verdict", "pass")
    expect(page.get_by_test_id("explain-outcome")).to_have_text(expected["decision"]["outcome"])
    expect(page.get_by_test_id("explain-policy-match")).to_have_text("carried = active")
    expect(page.get_by_test_id("explain-fills").locator("tbody tr")).to_have_count(len(expected["lifecycle"]["fills"]))
    expect(page.get_by_test_id("explain-setby").locator("tbody tr")).to_have_count(len(expected["context"]["set_by"]))

    # Halt through the dialog: a reason, then the word, then the recorded outcome. The reason holds
    # markup: it must come back as text.
    page.get_by_test_id("tab-dashboard").click()
    page.evaluate("window.__sameDocument = true")
    page.get_by_test_id("action-halt").click()
    submit = page.get_by_test_id("action-submit")
    expect(submit).to_be_disabled()
    reason = "e2e: halt from the page <img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
    page.get_by_test_id("action-reason").fill(reason)
    expect(submit).to_be_disabled()  # the word is still missing
    page.get_by_test_id("action-confirm").fill("HALT")
    expect(submit).to_be_enabled()
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live")
    submit.click()
    expect(page.get_by_test_id("action-outcome")).to_have_text("accepted")
    command_id = page.get_by_test_id("action-command-id").inner_text()
    position = page.get_by_test_id("action-position").inner_text()
    expect(page.get_by_test_id("action-reason-code")).to_have_text("—")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "halt-outcome-1280x800.png"))
    page.get_by_test_id("action-cancel").click()

    # The page does not refetch after a mutation while it is live: HALTED arrives through the
    # subscription (the head reaches the halt's position), in the same document.
    expect(page.get_by_test_id("breaker-state")).to_have_text("HALTED")
    page.wait_for_function("(position) => BigInt(document.querySelector('#live-head').textContent) >= BigInt(position)", arg=position)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.get_by_test_id("breaker-reason")).to_have_text(reason)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#panel-breaker img, #panel-breaker script").count() == 0

    # The ledger: the last halt.v1 command is this one, by alice, with the reason as typed.
    last = halt_records(console.ledger)[-1]
    assert last["command_id"] == command_id
    assert last["actor"] == "alice"
    assert last["data"]["command"]["reason"] == reason
    assert last["data"]["outcome"] == "accepted"
    tab.assert_clean()


def test_a_bad_token_is_refused_and_shows_no_data(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(console.url)
    page.get_by_test_id("login-token").fill("not-a-token")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("unknown or revoked token")
    expect(page.get_by_test_id("app-view")).to_be_hidden()
    assert page.get_by_test_id("breaker-state").count() == 0
    assert page.get_by_test_id("position-symbol").count() == 0
    assert page.evaluate("sessionStorage.getItem('titan.console.token')") is None
    tab.assert_clean()


def test_a_viewer_sees_the_desk_without_the_operator_buttons(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    sign_in(page, console, "victor")
    expect(page.get_by_test_id("who-roles")).to_have_text("viewer")
    expect(page.get_by_test_id("position-symbol")).to_have_count(3)
    for action in ("action-halt", "action-flatten", "action-resume"):
        expect(page.get_by_test_id(action)).to_be_hidden()
    # Explaining is for those who act on or audit a decision: the refusal shows inline.
    page.get_by_test_id("explain-input").fill(console.summary["order_to_explain"])
    page.get_by_test_id("explain-submit").click()
    expect(page.get_by_test_id("explain-error-code")).to_have_text("FORBIDDEN")
    expect(page.get_by_test_id("explain-error")).to_contain_text("victor has viewer")
    expect(page.get_by_test_id("app-view")).to_be_visible()
    tab.assert_clean()


def test_explaining_an_unknown_id_shows_not_found_inline(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    sign_in(page, console, "alice")
    page.get_by_test_id("explain-input").fill("ord-no-such-order")
    page.get_by_test_id("explain-submit").click()
    expect(page.get_by_test_id("explain-error-code")).to_have_text("NOT_FOUND")
    expect(page.get_by_test_id("explain-error")).to_contain_text("ord-no-such-order")
    expect(page.get_by_test_id("explain-trace")).to_be_hidden()
    tab.assert_clean()


def test_the_login_url_token_is_kept_for_the_tab_and_taken_out_of_the_address_bar(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    page.goto(f"{console.url}#token={console.tokens['victor']}")
    expect(page.get_by_test_id("who-subject")).to_have_text("victor")
    assert page.evaluate("location.hash") == ""
    assert console.tokens["victor"] not in page.url
    page.reload()  # sessionStorage keeps the tab signed in
    expect(page.get_by_test_id("who-subject")).to_have_text("victor")
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('titan.console.token')") is None
    tab.assert_clean()


def test_a_revoked_token_returns_to_the_login_form_with_the_message(console: Console, open_tab: Any) -> None:
    tab = open_tab()
    page = tab.page
    sign_in(page, console, "temp")
    wait_live(page)
    console.revoke("temp")
    # The live subscription re-checks the token: the page falls back to the login form by itself.
    expect(page.get_by_test_id("login-view")).to_be_visible()
    expect(page.get_by_test_id("login-error")).to_contain_text("unknown or revoked token")
    assert page.get_by_test_id("breaker-state").count() == 0
    tab.assert_clean()


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_the_main_views_fit_desk_screens(console: Console, open_tab: Any, width: int, height: int) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    tab = open_tab(width, height)
    page = tab.page
    sign_in(page, console, "alice")
    wait_live(page)
    expect(page.get_by_test_id("decisions").locator("tbody tr").first).to_be_visible()
    assert_no_horizontal_overflow(page, "dashboard-view")
    page.screenshot(path=str(SCREENSHOTS / f"dashboard-{width}x{height}.png"))

    page.get_by_test_id("explain-input").fill(console.summary["order_to_explain"])
    page.get_by_test_id("explain-submit").click()
    expect(page.get_by_test_id("explain-checks")).to_be_visible()
    assert_no_horizontal_overflow(page, "explain-view")
    page.screenshot(path=str(SCREENSHOTS / f"explain-{width}x{height}.png"), full_page=True)

    page.get_by_test_id("tab-dashboard").click()
    page.get_by_test_id("action-halt").click()
    page.get_by_test_id("action-reason").fill("screenshot of the halt dialog (not sent)")
    page.get_by_test_id("action-confirm").fill("HALT")
    expect(page.get_by_test_id("action-submit")).to_be_enabled()
    page.screenshot(path=str(SCREENSHOTS / f"halt-dialog-{width}x{height}.png"))
    page.get_by_test_id("action-cancel").click()
    expect(page.get_by_test_id("action-dialog")).to_be_hidden()
    tab.assert_clean()


def test_the_page_goes_offline_and_reconnects_when_the_console_restarts(tmp_path: Path, open_tab: Any) -> None:
    ledger = tmp_path / "fresh.db"
    init = titan_run(tmp_path, "init", "--ledger", f"sqlite:///{ledger}", "--json")
    assert init.returncode == 0, init.stderr
    token_file = tmp_path / "tokens"
    tokens, _ = write_tokens(token_file, {"olga": ("operator",)})
    port = free_port()
    process, url = start_console(tmp_path, ledger, token_file, port)
    try:
        tab = open_tab()
        page = tab.page
        page.goto(f"{url}#token={tokens['olga']}")
        expect(page.get_by_test_id("breaker-state")).to_have_text("NORMAL")
        wait_live(page)
        page.evaluate("window.__sameDocument = true")
        stop_console(process)
        expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "offline")
        expect(page.get_by_test_id("live-indicator")).to_contain_text("retry")
        process, _ = start_console(tmp_path, ledger, token_file, port)
        expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(page.get_by_test_id("breaker-state")).to_have_text("NORMAL")
        assert page.evaluate("window.__sameDocument") is True
        tab.assert_clean()
    finally:
        stop_console(process)
