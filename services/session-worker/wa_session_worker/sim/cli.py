"""Command line of the simulated WhatsApp network (``python -m wa_session_worker.sim``).

Commands (each connects to ``AMQP_URL`` or ``--amqp-url`` and acts as a simulated phone):

- ``scan QR --phone P [--name N]``: phone ``P`` scans the QR string of a ``qr`` event.
- ``code CODE --phone P``: phone ``P`` enters a pairing code (``XXXX-XXXX``).
- ``send --from P --to JID (--text T | --file PATH [--mimetype M] [--caption C])``: send as ``P``.
- ``list``: sessions of every worker on the network, with their phones' contact books.
- ``unlink --phone P [--device ID]``: the phone removes a linked device (all by default).
- ``watch``: print double-connection alerts as they happen (Ctrl-C stops).

It refuses to run when ``WA_ENGINE=neonize``: there is no simulated network then. Exit status:
0 done, 1 the network refused (unknown QR/code, nobody to receive), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import os
import sys
from pathlib import Path

# The network modules (aio-pika, pydantic schemas) are imported when a command runs, so that
# ``--help`` and the refusal under ``WA_ENGINE=neonize`` answer at once.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wa_session_worker.sim", description="Drive the simulated WhatsApp network (wa.sim)."
    )
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL"), help="default: $AMQP_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="scan a QR code with a simulated phone")
    scan.add_argument("qr")
    scan.add_argument("--phone", required=True)
    scan.add_argument("--name", help="push name of the phone's owner")

    code = sub.add_parser("code", help="enter a pairing code on a simulated phone")
    code.add_argument("code")
    code.add_argument("--phone", required=True)
    code.add_argument("--name")

    send = sub.add_parser("send", help="send a message as a simulated phone")
    send.add_argument("--from", dest="from_phone", required=True)
    send.add_argument("--to", required=True, help="recipient number or JID")
    send.add_argument("--text", default="")
    send.add_argument("--file", type=Path, help="send this file as media (--text is its caption)")
    send.add_argument("--mimetype", help="default: guessed from the file name")
    send.add_argument("--name", help="push name shown to the recipient")

    sub.add_parser("list", help="list the sessions (and their phones) on the network")

    unlink = sub.add_parser("unlink", help="remove linked devices from a simulated phone")
    unlink.add_argument("--phone", required=True)
    unlink.add_argument("--device", help="one device id (default: all)")

    sub.add_parser("watch", help="print double-connection alerts until Ctrl-C")
    return parser


async def _run(args: argparse.Namespace) -> int:
    from wa_common.bus import Bus
    from wa_common.schemas.sim import normalise_phone
    from wa_common.settings import DEFAULT_AMQP_URL
    from wa_common.sim_client import (
        sim_enter_code,
        sim_roll_call,
        sim_scan,
        sim_send,
        sim_unlink,
        watch_double_connections,
    )

    bus = Bus(args.amqp_url or DEFAULT_AMQP_URL, service="wa-sim-cli", publish_timeout_s=5.0)
    await bus.connect(declare=False, timeout_s=30.0)
    try:
        if args.command == "scan":
            await sim_scan(bus, args.qr, args.phone, push_name=args.name)
            print(f"scanned as {normalise_phone(args.phone)}")
        elif args.command == "code":
            await sim_enter_code(bus, args.code, args.phone, push_name=args.name)
            print(f"code entered on {normalise_phone(args.phone)}")
        elif args.command == "send":
            media = args.file.read_bytes() if args.file else None
            mimetype = args.mimetype or (mimetypes.guess_type(args.file.name)[0] if args.file else None)
            message_id = await sim_send(
                bus,
                args.from_phone,
                args.to,
                text=args.text,
                media=media,
                mimetype=mimetype or "application/octet-stream",
                filename=args.file.name if args.file else None,
                push_name=args.name,
            )
            print(message_id)
        elif args.command == "list":
            answers = await sim_roll_call(bus, wait_s=1.0)
            if not answers:
                print("no simulator engine answered")
            for answer in sorted(answers, key=lambda a: a.worker):
                print(f"worker {answer.worker}: {len(answer.sessions)} session(s)")
                for s in sorted(answer.sessions, key=lambda s: s.instance_id):
                    print(f"  {s.instance_id}  {s.status:<12} {s.jid or '-'}  {s.push_name or ''}")
                    for c in s.contacts:
                        print(f"      contact {c.jid}  {c.name or ''}")
        elif args.command == "unlink":
            await sim_unlink(bus, args.phone, args.device)
            print(f"unlink sent to {normalise_phone(args.phone)}'s sessions")
        elif args.command == "watch":
            watch = await watch_double_connections(bus)
            seen = 0
            try:
                while True:
                    await asyncio.sleep(0.2)
                    for alert in watch.alerts[seen:]:
                        print(
                            f"{alert.at.isoformat()} double connection {alert.jid}: "
                            f"{alert.replaced_worker} replaced by {alert.by_worker}",
                            flush=True,
                        )
                    seen = len(watch.alerts)
            finally:
                await watch.stop()
        return 0
    finally:
        await bus.close(timeout_s=2.0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.environ.get("WA_ENGINE", "simulator") == "neonize":
        print("WA_ENGINE=neonize: there is no simulated network to drive", file=sys.stderr)
        return 2
    from wa_common.bus import PublishError
    from wa_common.logs import configure_logging
    from wa_common.schemas.sim import SimError

    configure_logging("wa-sim-cli", "WARNING", "console")
    try:
        return asyncio.run(_run(args))
    except (SimError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except PublishError as exc:
        print(f"error: the broker refused: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot reach RabbitMQ at the AMQP URL: {exc}", file=sys.stderr)
        return 1
