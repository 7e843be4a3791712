"""The hostile run (scripts/crash/hostile): what a stranger can send, all at once, while an
honest load runs beside it. Stdlib only; raw HTTP/1.1 over asyncio streams, so that methods,
headers and pacing are exactly what is asked.

Attacks, spread over --seconds:
  methods   --methods requests with invented methods (random letters, up to 1 KiB) on every
            service's paths;
  polls     --polls long polls (If-None-Match + Prefer: wait=30) from ONE customer's token,
            as many open at once as it can get;
  trickles  --trickles POST /orders whose body arrives one byte a second;
  forged    a forged OrderPlaced every second, to orders.events, from a client with no
            credentials, with a wrong password, and as the `order` principal (which may
            only read inventory's topic), through kcat (--kcat: the command to run it).

Prints a JSON report: answers by attack and status, the processes' memory (RSS) at the start
and at its highest, and the forged events' ids.
"""

import argparse
import asyncio
import json
import random
import string
import subprocess
import time
import uuid

import system

SERVICES = {entry["name"]: entry["port"] for entry in system.processes()}
PATHS = ["/orders", "/orders/00000000-0000-7000-8000-000000000000", "/health", "/health/live", "/stock",
         "/metrics", "/admin/crash-points", "/openapi.json", "/notifications"]


async def exchange(port, head, body=b"", trickle=None, timeout=40.0):
    """Sends a request and returns the status code of the answer (0: the server closed the
    connection without one, -1: no answer within the timeout)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        return -2
    async def send_body():
        try:
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(trickle)
        except (ConnectionError, OSError):
            pass  # the server hung up on the slow body: what it should do

    sending = None
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        if trickle:
            # The body goes on while the answer is awaited: a server that gives up on a slow
            # body answers (or hangs up) before the body is done.
            sending = asyncio.create_task(send_body())
        else:
            writer.write(body)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (ConnectionError, OSError):
        return 0
    except asyncio.TimeoutError:
        return -1
    finally:
        if sending:
            sending.cancel()
        writer.close()


def count(statuses, key, status):
    bucket = statuses.setdefault(key, {})
    bucket[str(status)] = bucket.get(str(status), 0) + 1


async def methods(args, statuses, deadline):
    spacing = args.seconds / max(args.methods, 1)
    for n in range(args.methods):
        length = random.choice([3, 8, 16, 64, 1024])
        method = "".join(random.choices(string.ascii_uppercase, k=length))
        service, port = random.choice(list(SERVICES.items()))
        head = f"{method} {random.choice(PATHS)} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        asyncio.create_task(record(statuses, "methods", exchange(port, head, timeout=10)))
        await asyncio.sleep(spacing if time.monotonic() < deadline else 0)


async def record(statuses, key, answer):
    count(statuses, key, await answer)


async def polls(args, statuses, deadline, order_id, etag):
    """Keeps --polls long polls open, one customer, renewing each as it ends."""
    head = (f"GET /orders/{order_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {args.attacker_token}\r\n"
            f"If-None-Match: {etag}\r\nPrefer: wait=30\r\nConnection: close\r\n\r\n")

    async def one():
        while time.monotonic() < deadline:
            status = await exchange(SERVICES["order"], head, timeout=40)
            count(statuses, "polls", status)
            if status == 429:
                await asyncio.sleep(1)

    await asyncio.gather(*(one() for _ in range(args.polls)))


async def trickles(args, statuses, deadline):
    body = json.dumps({"lines": [{"sku": "MUG-01", "quantity": 1}]}).encode().ljust(2000)

    async def one():
        while time.monotonic() < deadline:
            head = (f"POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {args.attacker_token}\r\n"
                    f"Idempotency-Key: {uuid.uuid4()}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            count(statuses, "trickles", await exchange(SERVICES["order"], head, body, trickle=1.0, timeout=60))

    await asyncio.gather(*(one() for _ in range(args.trickles)))


def forged_event(template, order_id):
    event = json.loads(template)
    event["event_id"] = str(uuid.uuid4())
    event["aggregate_id"] = order_id
    event["payload"]["order_id"] = order_id
    event["payload"]["customer_id"] = "forger@evil.example"
    return event


async def forge(args, report, deadline):
    """A forged OrderPlaced a second, alternating the three identities."""
    identities = [
        ("no credentials", ["-X", "security.protocol=plaintext"]),
        ("a wrong password", ["-X", "security.protocol=sasl_plaintext", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                              "-X", "sasl.username=inventory", "-X", "sasl.password=not-the-password"]),
        ("the order principal", ["-X", "security.protocol=sasl_plaintext", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                                 "-X", "sasl.username=order", "-X", f"sasl.password={args.order_password}"]),
    ]
    n = 0
    while time.monotonic() < deadline:
        who, options = identities[n % len(identities)]
        order_id = str(uuid.uuid4())
        event = forged_event(args.template, order_id)
        command = args.kcat.split() + ["-b", args.brokers, *options, "-X", "message.timeout.ms=3000",
                                       "-P", "-t", args.orders_topic, "-k", order_id]
        process = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await process.communicate(json.dumps(event).encode())
        report["forged"].append({"by": who, "order_id": order_id, "event_id": event["event_id"],
                                 "kcat_exit": process.returncode, "error": err.decode(errors="replace")[-200:]})
        n += 1
        await asyncio.sleep(1)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def memory(args, report, deadline):
    pids = json.loads(args.pids)
    report["memory_kib"] = {name: {"start": rss_kib(pid), "max": rss_kib(pid), "end": None} for name, pid in pids.items()}
    while time.monotonic() < deadline:
        await asyncio.sleep(5)
        for name, pid in pids.items():
            now = rss_kib(pid)
            entry = report["memory_kib"][name]
            if now is not None:
                entry["max"] = max(entry["max"] or 0, now)
                entry["end"] = now


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--methods", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=1_000)
    parser.add_argument("--trickles", type=int, default=200)
    parser.add_argument("--attacker-token", required=True)
    parser.add_argument("--poll-order", required=True, help="ORDER_ID ETAG of one of the attacker's orders")
    parser.add_argument("--kcat", required=True)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--orders-topic", default="orders.events")
    parser.add_argument("--order-password", required=True)
    parser.add_argument("--template", required=True, help="a real OrderPlaced, as JSON, to forge from")
    parser.add_argument("--pids", required=True, help='{"order": PID, ...}')
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    statuses, report = {}, {"forged": []}
    order_id, etag = args.poll_order.split(" ", 1)
    await asyncio.gather(
        methods(args, statuses, deadline),
        polls(args, statuses, deadline, order_id, etag),
        trickles(args, statuses, deadline),
        forge(args, report, deadline),
        memory(args, report, deadline),
    )
    await asyncio.sleep(2)  # the last method requests' answers
    report["answers"] = statuses
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
