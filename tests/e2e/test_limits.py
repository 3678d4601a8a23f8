"""Issue 7 through the whole system: a user with ``maxMessagesSent=5`` sends 5 messages; the
``limit_exceeded`` webhook is delivered once; the 6th send is refused with 429 naming the limit;
raising the limit lets sends through again. (The UTC-day rollover that lifts the block is tested
with an injected clock in ``services/stats/tests``: processes here run on the real clock.)
"""

from __future__ import annotations

import httpx
import pytest

from tests.e2e import steps
from tests.e2e.conftest import System
from tests.support.webhooks import WebhookReceiver
from wa_common.ids import new_id

pytestmark = pytest.mark.e2e


async def test_max_messages_sent_refuses_the_sixth_send(system: System, receiver: WebhookReceiver) -> None:
    api, admin = system.api, system.admin
    email, password = await steps.create_user(api, admin)
    login = await steps.login(api, email, password)
    headers = {"Authorization": f"Bearer {login['token']}"}
    user_id = login["user"]["id"]
    response = await api.put(f"/api/users/{user_id}/limits", headers=admin, json={"maxMessagesSent": 5})
    assert response.status_code == 200, response.text

    hook, secret = f"limits-{new_id().lower()}", "limits-secret"
    iid = (await steps.create_instance(api, headers, "limited", receiver.url(hook, secret), secret))["id"]
    await steps.link(api, admin, headers, iid, steps.new_phone())
    contact = steps.new_phone()
    for i in range(5):
        await steps.send_text(api, headers, iid, contact, f"message {i + 1} of 5")

    hooks = await receiver.wait(
        lambda: receiver.unique(hook, "limit_exceeded"), timeout_s=30, message="limit_exceeded webhook"
    )
    assert hooks[0].data["exceededLimits"] == ["maxMessagesSent"]
    assert hooks[0].data["usage"]["messagesSent"] == 5

    async def send() -> httpx.Response:
        body = {"phone": contact, "message": "one more"}
        return await api.post(f"/api/whatsapp/{iid}/send", headers=headers, json=body)

    sixth = await send()
    assert sixth.status_code == 429, sixth.text
    assert "maxMessagesSent" in sixth.json()["error"] and int(sixth.headers["Retry-After"]) > 0
    assert (await send()).status_code == 429
    # Other calls still work while sends are blocked.
    assert (await api.get(f"/api/instances/{iid}", headers=headers)).status_code == 200

    # A later webhook on the same endpoint is a barrier: by then a second limit_exceeded would be here.
    test = await api.post(f"/api/instances/{iid}/webhooks/test", headers=headers)
    assert test.status_code == 202, test.text
    await receiver.wait(lambda: receiver.hooks(hook, "webhook_test"), message="test webhook")
    assert len(receiver.hooks(hook, "limit_exceeded")) == 1

    response = await api.put(f"/api/users/{user_id}/limits", headers=admin, json={"maxMessagesSent": 100})
    assert response.status_code == 200, response.text
    again = await send()
    assert again.status_code == 200, again.text
    history = await steps.history(api, headers, iid, contact)
    assert len(history) == 6
