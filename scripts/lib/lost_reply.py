"""A client that loses its replies and retries with the same Idempotency-Key (stdlib only)."""
import argparse
import json
import socket
import sys
import time
import urllib.request
import uuid

import system

ORDER = "127.0.0.1", system.process("order")["port"]
INVENTORY = system.url("inventory")
# The customer's token (scripts/token), set from --customer-token.
CUSTOMER_TOKEN = ""


def post(key, body, prefer="wait=0"):
    request = urllib.request.Request(
        f"http://{ORDER[0]}:{ORDER[1]}/orders", data=json.dumps(body).encode(), method="POST",
        headers={"Idempotency-Key": key, "Content-Type": "application/json", "Prefer": prefer,
                 "Authorization": f"Bearer {CUSTOMER_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def stock(sku):
    with urllib.request.urlopen(f"{INVENTORY}/stock/{sku}", timeout=10) as response:
        return json.load(response)["available"]


def add_product(token, sku, units):
    """A product of the run's own, so that earlier load (sold-out stock) cannot decide it."""
    request = urllib.request.Request(
        f"{INVENTORY}/admin/products/{sku}",
        data=json.dumps({"name": "lost-reply drill", "stock": units}).encode(), method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def send_and_hang_up(key, body):
    """Sends the whole request, then closes the socket without reading the reply."""
    payload = json.dumps(body).encode()
    head = (f"POST /orders HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: {key}\r\n"
            f"Authorization: Bearer {CUSTOMER_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(ORDER) as s:
        s.sendall(head + payload)
        s.shutdown(socket.SHUT_WR)


def arm(token, point, action):
    request = urllib.request.Request(
        f"http://{ORDER[0]}:{ORDER[1]}/admin/crash-points/{point}",
        data=json.dumps({"action": action}).encode(), method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def retry_until_answered(key, body):
    for attempt in range(1, 20):
        status, reply = post(key, body)
        if status < 500:
            return attempt, status, reply
        time.sleep(0.2 * attempt)
    sys.exit(f"no answer for {key}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True, help="inventory's admin token")
    parser.add_argument("--customer-token", required=True, help="the ordering customer's token")
    args = parser.parse_args()
    global CUSTOMER_TOKEN
    CUSTOMER_TOKEN = args.customer_token
    sku, failures = f"LOST-REPLY-{time.strftime('%y%m%d%H%M%S')}", 0
    add_product(args.token, sku, 10)
    for name, lose in [("connection dropped after sending", None), ("500 after commit", "error")]:
        before = stock(sku)
        key = str(uuid.uuid4())
        body = {"lines": [{"sku": sku, "quantity": 1}]}
        if lose:
            arm(args.token, "order.after_commit_before_reply", "1*" + lose)
            status, reply = post(key, body)
            print(f"{name}: first attempt answered {status} ({reply.get('error')})")
        else:
            send_and_hang_up(key, body)
            print(f"{name}: first attempt sent, reply never read")
        attempts, status, reply = retry_until_answered(key, body)
        again_status, again = post(key, body)
        time.sleep(1)
        after = stock(sku)
        same = reply["id"] == again["id"]
        ok = same and before - after == 1 and status in (201, 202)
        failures += not ok
        print(f"  retry: {status} order {reply['id']} (replayed: {reply['id'] == again['id']}); "
              f"stock {before} -> {after}: {'ok' if ok else 'WRONG'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
