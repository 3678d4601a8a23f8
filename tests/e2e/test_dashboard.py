"""The web dashboard in real headless Chromium (Debian's ``chromium``, driven by Playwright for
Python) against the running system on the simulator engine (``tests/e2e/conftest.py``).

Flow (issue 10's acceptance): log in, create an instance, see the QR image, simulate the scan,
see "Connected" without reloading (the live event stream), send a message, see it in the chat
history and its webhook delivery listed; a second user does not see the first user's instance,
at phone width and with the keyboard. The QR countdown runs to the code's expiry (``expiresAt``)
and a re-read of the same code does not restart it; statuses are shown in words ("Waiting for
scan"); a linked instance shows its number and push name; keys and ids are never broken across
lines. Each step leaves a screenshot in ``test-artifacts/dashboard/`` (kept by CI as artifacts).

Chromium is found at ``CHROMIUM`` (default ``/usr/bin/chromium``); without it the tests are
skipped, unless ``WA_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e import steps
from tests.e2e.conftest import System
from tests.support.webhooks import WebhookReceiver

pytestmark = [pytest.mark.e2e]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
TIMEOUT_MS = 30_000

try:
    from playwright.async_api import Browser, Locator, Page, async_playwright, expect
except ImportError:  # pragma: no cover - playwright is a dev dependency in uv.lock
    async_playwright = None  # type: ignore[assignment]


def _require_browser() -> None:
    missing = async_playwright is None or not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM))
    if not missing:
        return
    why = f"Chromium not found at {CHROMIUM} (apt-get install chromium) or playwright missing"
    if os.environ.get("WA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (WA_REQUIRE_BROWSER=1): {why}")
    pytest.skip(f"dashboard browser tests skipped: {why}")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Shots:
    """Numbered screenshots of one test: ``<test>-NN-<step>.png``."""

    def __init__(self, page: Page, name: str) -> None:
        self.page, self.name, self.n = page, name, 0

    async def __call__(self, step: str) -> None:
        self.n += 1
        await self.page.screenshot(
            path=str(ARTIFACTS / f"{self.name}-{self.n:02d}-{step}.png"), full_page=True
        )


async def _new_page(browser: Browser, *, width: int = 1280, height: int = 900) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def _log_in(page: Page, base_url: str, email: str, password: str) -> None:
    await page.goto(base_url + "/")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Instances")).to_be_visible()


async def _lines(locator: Locator) -> int:
    """Lines the element's text occupies (one client rectangle per line box of a text run)."""
    count: int = await locator.evaluate(
        "(e) => { const r = document.createRange(); r.selectNodeContents(e);"
        " const rows = [...r.getClientRects()].filter((x) => x.width > 0).map((x) => Math.round(x.top));"
        " return new Set(rows).size; }"
    )
    return count


async def test_link_send_and_see_the_webhook_delivery(
    system: System, receiver: WebhookReceiver, browser: Browser
) -> None:
    cluster = system.cluster
    page = await _new_page(browser)
    shot = Shots(page, "admin")
    name = f"Dashboard {secrets.token_hex(3)}"
    contact = steps.new_phone()
    text = f"hello from the dashboard {secrets.token_hex(3)}"

    # Log in: the token lives in sessionStorage, never in the URL.
    await page.goto(cluster.gateway_url + "/")
    await shot("login-page")
    await _log_in(page, cluster.gateway_url, cluster.admin_email, cluster.admin_password)
    assert "token" not in page.url and "eyJ" not in page.url
    await shot("instances")

    # Create an instance with a webhook to the loopback receiver.
    await page.get_by_role("button", name="New instance").click()
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("Description").fill("created in the browser test")
    await page.get_by_label("Webhook URL").fill(receiver.url("dashboard"))
    await page.get_by_label("Webhook enabled").check()
    await page.get_by_label("Notify sent messages").check()
    await shot("new-instance-form")
    await page.get_by_role("button", name="Create instance").click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    instance_id = page.url.split("#/instances/", 1)[1].split("/", 1)[0].split("?", 1)[0]
    assert instance_id

    # The QR code, rendered as an image from GET /qr?format=png.
    qr = page.get_by_role("img", name="WhatsApp QR code")
    await expect(qr).to_be_visible()
    await page.wait_for_function(
        "() => { const i = document.querySelector('img[alt=\"WhatsApp QR code\"]');"
        " return i && i.complete && i.naturalWidth > 100; }"
    )
    await expect(page.locator("#qr-countdown")).to_contain_text("QR expires in")
    await shot("qr")

    # Simulate the scan; "Connected" arrives over the live stream, without a reload.
    await page.evaluate("window.__noReload = true")
    await page.get_by_role("button", name="Simulate scan").click()
    await expect(page.locator("#link-state")).to_contain_text("Connected")
    await expect(page.locator("#instance-status")).to_contain_text("Connected")
    assert await page.evaluate("window.__noReload === true"), "the page reloaded"
    await expect(qr).to_have_count(0)
    await shot("connected")

    # Send a message.
    await page.get_by_role("tab", name="Send").click()
    await page.get_by_label("Phone number").fill(contact)
    await page.get_by_role("textbox", name="Message", exact=True).fill(text)
    await page.get_by_role("button", name="Send message").click()
    await expect(page.get_by_text("Message sent")).to_be_visible()
    await shot("sent")

    # The message in the chat history.
    await page.get_by_role("tab", name="Chats").click()
    await page.get_by_label("Chat (phone or JID)").fill(contact)
    await page.get_by_role("button", name="Load history").click()
    await expect(page.get_by_text(text)).to_be_visible()
    await shot("history")

    # Its webhook delivery, listed (the receiver really got it).
    await receiver.wait(lambda: receiver.unique("dashboard", "message_sent"), timeout_s=30, message="hook")
    await page.get_by_role("tab", name="Webhooks").click()
    await expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="message_sent")
    await expect(row.first).to_be_visible()
    await expect(row.first).to_contain_text("Delivered")
    await expect(row.first.get_by_role("button", name="Redeliver")).to_be_visible()
    await shot("webhook-deliveries")

    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.context.close()


async def test_second_user_sees_only_their_instances_at_phone_width(system: System, browser: Browser) -> None:
    api, admin, cluster = system.api, system.admin, system.cluster
    owner = await steps.user_headers(api, admin)
    hidden = await steps.create_instance(api, owner, f"Private {secrets.token_hex(3)}", None, None)
    hidden_id = str(hidden.get("instanceId", hidden.get("id")))
    email, password = await steps.create_user(api, admin)

    page = await _new_page(browser, width=375, height=740)
    shot = Shots(page, "second-user")
    await page.goto(cluster.gateway_url + "/")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    # The keyboard alone: type into Email, Tab to Password, Enter submits.
    await page.get_by_label("Email").focus()
    await page.keyboard.type(email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(password)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Instances")).to_be_visible()
    await expect(page.get_by_text(hidden["name"])).to_have_count(0)
    # No admin navigation, and nothing wider than the phone.
    await expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    await shot("instances")

    # Another user's instance by its address: the API's 404 message, no data.
    await page.goto(f"{cluster.gateway_url}/#/instances/{hidden_id}")
    await expect(page.get_by_role("alert")).to_contain_text("not found", ignore_case=True)
    await expect(page.get_by_role("heading", name=hidden["name"])).to_have_count(0)
    await shot("foreign-instance")

    # A wrong password shows the API's error text.
    await page.get_by_role("button", name="Log out", exact=True).click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("invalid", ignore_case=True)
    await shot("wrong-password")
    await page.context.close()


async def test_admin_creates_a_user_sets_limits_and_sees_workers(system: System, browser: Browser) -> None:
    """Admin pages: create a user (who can then log in through the API), set their limits (read
    back through the API), see system statistics and every worker with its shards; account page:
    the API key is masked until shown."""
    api, admin, cluster = system.api, system.admin, system.cluster
    page = await _new_page(browser)
    shot = Shots(page, "admin-pages")
    await _log_in(page, cluster.gateway_url, cluster.admin_email, cluster.admin_password)

    await page.get_by_role("link", name="Admin").click()
    await expect(page.get_by_role("heading", name="Users")).to_be_visible()
    email = f"dash-{secrets.token_hex(4)}@example.com"
    await page.get_by_role("button", name="New user").click()
    form = page.locator("#create-user-form")
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill("dashboard-pass-1")
    await form.get_by_label("First name").fill("Dash")
    await form.get_by_label("Last name").fill("Board")
    await form.get_by_role("button", name="Create user").click()
    await expect(page.get_by_text(f"User {email} created.")).to_be_visible()
    created = await steps.login(api, email, "dashboard-pass-1")
    await shot("user-created")

    row = page.get_by_role("row").filter(has_text=email)
    await row.get_by_role("button", name="Limits").click()
    await page.get_by_label("Messages per day").fill("5")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_text("Limits saved.")).to_be_visible()
    limits = await api.get(f"/api/users/{created['user']['id']}/limits", headers=admin)
    assert limits.status_code == 200 and limits.json()["limits"]["maxMessagesSent"] == 5, limits.text
    await shot("limits-saved")
    await page.keyboard.press("Escape")

    await expect(page.get_by_role("heading", name="System statistics")).to_be_visible()
    await expect(page.get_by_role("heading", name="Workers and shards")).to_be_visible()
    workers = (await api.get("/api/admin/workers", headers=admin)).json()["workers"]
    for worker in workers:
        cell = page.get_by_role("row").filter(has_text=worker["id"]).locator("code")
        await expect(cell).to_be_visible()
        assert await _lines(cell) == 1, f"worker id {worker['id']} is broken across lines"
    await shot("workers")

    await page.get_by_role("link", name="Account").click()
    await expect(page.get_by_role("heading", name="API key")).to_be_visible()
    key = (await steps.login(api, cluster.admin_email, cluster.admin_password))["user"]["apiKey"]
    assert key not in await page.content(), "the API key is masked until shown"
    masked = page.locator("#api-key-value")
    assert await _lines(masked) == 1, "the masked key is broken across lines"
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#api-key-value")).to_have_text(key)
    assert await _lines(page.locator("#api-key-value")) == 1, "the API key is broken across lines"
    await shot("account")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.context.close()


# Every change of the countdown's text, with the browser's time, from the moment it is installed.
RECORD_COUNTDOWN = """() => {
    const el = document.querySelector('#qr-countdown');
    window.__countdown = [[Date.now(), el.textContent]];
    new MutationObserver(() => window.__countdown.push([Date.now(), el.textContent]))
        .observe(el, {childList: true, characterData: true, subtree: true});
}"""


def _off_by(records: list[list[object]], expires_at: str) -> list[tuple[str, int]]:
    """The recorded countdown texts that do not match the seconds left until ``expires_at`` at
    the time they were shown (one second of slack: a tick may land a few ms late)."""
    deadline_ms = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp() * 1000
    wrong = []
    for at, text in records:
        if not str(text).startswith("QR expires in "):
            continue
        shown = int(str(text).removeprefix("QR expires in ").removesuffix(" s"))
        left = -(-(deadline_ms - float(str(at))) // 1000)  # ceil
        if abs(shown - left) > 1:
            wrong.append((str(text), int(left)))
    return wrong


async def test_qr_countdown_follows_the_codes_expiry_and_the_linked_account_is_shown(
    system: System, browser: Browser
) -> None:
    """The page is opened after the code was issued (so no qr_received event told its expiry):
    the countdown still runs to the ``expiresAt`` of ``GET .../qr``, and a re-read of the same
    code (the page shown again) does not restart it. The badge says "Waiting for scan"; once
    linked, the number and push name are shown."""
    api, admin, cluster = system.api, system.admin, system.cluster
    name = f"Countdown {secrets.token_hex(3)}"
    iid = str((await steps.create_instance(api, admin, name, None, None))["id"])
    await steps.wait_qr(api, admin, iid)
    answer = await api.get(f"/api/instances/{iid}/qr", headers=admin)
    assert answer.status_code == 200, answer.text
    expires_at = answer.json()["expiresAt"]
    left_s = (datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
    # The first code of an attempt lives 60 s (WORKER_SIM_QR_FIRST_S): far from the old 20 s guess.
    assert left_s > 30, expires_at
    image = await api.get(f"/api/instances/{iid}/qr", headers=admin, params={"format": "png"})
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-qr-expires-at"] == expires_at and image.headers["etag"]

    page = await _new_page(browser)
    shot = Shots(page, "qr-countdown")
    await _log_in(page, cluster.gateway_url, cluster.admin_email, cluster.admin_password)
    await page.goto(f"{cluster.gateway_url}/#/instances/{iid}/link")
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await expect(page.get_by_role("img", name="WhatsApp QR code")).to_be_visible()
    await expect(page.locator("#qr-countdown")).to_contain_text("QR expires in")
    await expect(page.locator("#instance-status")).to_contain_text("Waiting for scan")
    await page.evaluate(RECORD_COUNTDOWN)
    await shot("qr")

    # The same code read again (the tab shown again): same ETag, the countdown goes on.
    async with page.expect_response(lambda r: f"/api/instances/{iid}/qr" in r.url) as polled:
        await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    again = await polled.value
    assert again.status == 200 and await again.header_value("etag") == image.headers["etag"]
    # Two more ticks after the re-read, every text since the page opened matching expiresAt.
    seen = await page.evaluate("window.__countdown.length")
    await page.wait_for_function("(n) => window.__countdown.length >= n", arg=seen + 2)
    records = await page.evaluate("window.__countdown")
    assert not _off_by(records, expires_at), (expires_at, records)
    await shot("qr-after-re-read")

    # Linked: "Connected", with the number and push name the simulated phone linked as.
    phone = steps.new_phone()
    await steps.scan(api, admin, iid, phone)
    await expect(page.locator("#link-state")).to_contain_text("Connected")
    await expect(page.locator("#instance-status")).to_contain_text("Connected")
    await expect(page.locator("#linked-account")).to_contain_text(f"+{phone}")
    await expect(page.locator("#linked-account")).to_contain_text("E2E Phone")
    await expect(page.locator("#link-state")).to_contain_text(f"+{phone}")
    await shot("linked")
    # At phone width: nothing wider than the screen, the id on one line.
    await page.set_viewport_size({"width": 375, "height": 740})
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert await _lines(page.locator("code.id").first) == 1
    await shot("linked-phone-width")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    await page.context.close()
