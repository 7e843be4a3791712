"""Judges the hostile run (scripts/crash/hostile) from its files; prints the figures and exits
non-zero on a breach: a 5xx other than a documented 503, an honest customer's 5xx, a process
whose memory grew past 1.2x of its start, a forged event on the topic or applied anywhere.

Usage: hostile_report.py DIR   (DIR holds report.json, baseline.json, honest.json,
                                topic-ids.txt, applied.txt)
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
report = json.loads((out / "report.json").read_text())
baseline = json.loads((out / "baseline.json").read_text())
honest = json.loads((out / "honest.json").read_text())
breaches = []

print("answers to the attacks, by status (0: hung up without an answer, -1: no answer in time):")
for attack, statuses in sorted(report["answers"].items()):
    total = sum(statuses.values())
    print(f"  {attack:9} {total:6}  " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda kv: int(kv[0]))))
    for status, n in statuses.items():
        if 500 <= int(status) <= 599 and status != "503":
            breaches.append(f"{attack}: {n} x {status}")

print("honest customers (reply latency, ms):")
for name, run in [("before", baseline), ("during", honest)]:
    reply = run["reply"]
    print(f"  {name:7} {run['requests']:6} orders  p50 {reply['p50_ms']:.1f}  p99 {reply['p99_ms']:.1f}  max {reply['max_ms']:.1f}"
          f"  replies {run['by_reply_status']}  final {run['by_final_status']}")
bad = {s: n for s, n in honest["by_reply_status"].items() if s == "error" or (s.isdigit() and int(s) >= 500)}
if bad:
    breaches.append(f"honest customers got {bad}")

print("memory (RSS, MiB): start -> highest (ratio)")
for name, entry in sorted(report["memory_kib"].items()):
    if not entry["start"]:
        breaches.append(f"{name}: no memory figure (process gone?)")
        continue
    ratio = entry["max"] / entry["start"]
    print(f"  {name:14} {entry['start'] / 1024:7.1f} -> {entry['max'] / 1024:7.1f}  ({ratio:.2f}x)")
    if ratio > 1.2:
        breaches.append(f"{name}: memory {ratio:.2f}x its start")

forged = report["forged"]
by_who = {}
for f in forged:
    by_who.setdefault(f["by"], [0, 0])
    by_who[f["by"]][0] += 1
    by_who[f["by"]][1] += f["kcat_exit"] != 0
print(f"forged OrderPlaced events: {len(forged)} sent")
for who, (sent, failed) in by_who.items():
    print(f"  {who:20} {sent:4} sent, {failed:4} reported failed by the client")
on_topic = set((out / "topic-ids.txt").read_text().split())
ids = {f["event_id"] for f in forged} | {f["order_id"] for f in forged}
landed = ids & on_topic
applied = [line for line in (out / "applied.txt").read_text().splitlines() if line.strip() and line.strip() != "0"]
print(f"  on the topic: {len(landed)}; applied in any database: {len(applied)}")
if landed:
    breaches.append(f"{len(landed)} forged events reached the topic")
if applied:
    breaches.append(f"forged events applied: {applied}")

if breaches:
    print("BREACHES:", *breaches, sep="\n  ")
    sys.exit(1)
print("no breach: no 5xx but documented 503s, memory within 1.2x, no forged event on the topic or applied")
