"""``python -m wa_common.preflight``: check that RabbitMQ answers before ``make run`` starts.

Exit status 0 when an AMQP connection to ``AMQP_URL`` (default the local broker, guest/guest)
opens within 5 s; otherwise 1, after saying exactly what failed and how to start a broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from urllib.parse import urlsplit

import aio_pika

from wa_common.settings import DEFAULT_AMQP_URL

HOW_TO_START = """\
RabbitMQ is not reachable at {url}
  ({error})
Start a local broker, then run the command again:
  - installed from Debian packages:  sudo rabbitmq-server -detached
                                     (or: sudo systemctl start rabbitmq-server)
  - with Docker:  docker run -d --name rabbitmq -p 5672:5672 rabbitmq:3.13-management
Or point AMQP_URL at an existing broker, e.g. AMQP_URL=amqp://user:pass@host:5672/ make run"""


async def check(url: str) -> str | None:
    """Return ``None`` when ``url`` accepts an AMQP connection, else the error text."""
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


def main() -> int:
    # aiormq logs the failed connection attempt itself; with no handler configured Python would
    # print it raw before our explanation.
    logging.getLogger().addHandler(logging.NullHandler())
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    error = asyncio.run(check(url))
    if error is None:
        return 0
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}{parts.path}"  # no credentials
    print(HOW_TO_START.format(url=shown, error=error), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
