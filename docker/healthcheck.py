"""Container health check: GET http://127.0.0.1:<port>/healthz of the service in this image.

The service is named by ``APP_MODULE`` (baked into the image); its port by the service's own
``<PREFIX>PORT`` variable, with the same default as its settings class. Exit 0 when /healthz
answers 200, 1 otherwise. Standard library only (it runs inside the slim runtime image).
"""

from __future__ import annotations

import os
import sys
import urllib.request

PORTS = {
    "wa_gateway": ("GATEWAY_PORT", 8080),
    "wa_auth": ("AUTH_PORT", 8081),
    "wa_stats": ("STATS_PORT", 8082),
    "wa_webhooks": ("WEBHOOKS_PORT", 8083),
    "wa_session_worker": ("WORKER_PORT", 8084),
}


def main() -> int:
    module = os.environ.get("APP_MODULE", "")
    if module not in PORTS:
        print(f"healthcheck: unknown APP_MODULE {module!r}", file=sys.stderr)
        return 1
    var, default = PORTS[module]
    url = f"http://127.0.0.1:{os.environ.get(var, default)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
