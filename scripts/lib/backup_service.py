"""A stand-in for the company's old backup service: it accepts **one upload per calendar day**
(UTC) and refuses a second with 429, keeping what it receives in its own folder.

  POST /uploads          body: the day's bundle → 201 {"day", "bytes", "sha256"}; 429 if today has one
  GET  /uploads          → [{"day", "bytes", "sha256"}], oldest first
  GET  /uploads/<day>    → the bundle

Usage: backup_service.py DIR [PORT]   (default port 8099, 127.0.0.1 only)
"""

import datetime
import hashlib
import http.server
import json
import pathlib
import sys
import threading

store = pathlib.Path(sys.argv[1])
store.mkdir(parents=True, exist_ok=True)
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8099
lock = threading.Lock()


def listing():
    out = []
    for path in sorted(store.glob("*.bundle")):
        out.append({"day": path.stem, "bytes": path.stat().st_size,
                    "sha256": path.with_suffix(".sha256").read_text().strip()})
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path != "/uploads":
            return self.reply(404, {"error": "not_found", "message": "POST /uploads"})
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return self.reply(400, {"error": "empty", "message": "send the bundle as the request body"})
        data = self.rfile.read(length)
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        with lock:
            target = store / f"{today}.bundle"
            if target.exists():
                tomorrow = (datetime.date.fromisoformat(today) + datetime.timedelta(days=1)).isoformat()
                return self.reply(429, {"error": "already_called_today",
                                        "message": f"one upload per day: {today} has one; the next call is accepted on {tomorrow} (UTC)"})
            digest = hashlib.sha256(data).hexdigest()
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            target.with_suffix(".sha256").write_text(digest + "\n")
            partial.rename(target)
        self.reply(201, {"day": today, "bytes": len(data), "sha256": digest})

    def do_GET(self):
        if self.path == "/uploads":
            return self.reply(200, listing())
        day = self.path.removeprefix("/uploads/")
        path = store / f"{day}.bundle"
        if not self.path.startswith("/uploads/") or "/" in day or not path.exists():
            return self.reply(404, {"error": "not_found", "message": f"no upload for {day!r}"})
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("backup-service: " + (fmt % args) + "\n")


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
