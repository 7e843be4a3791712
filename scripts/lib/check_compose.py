"""Structural checks of compose/ that need no Docker engine.

- docker-compose.yml parses; every depends_on names a service; every bind-mounted host path
  and the Dockerfile exist; long-running services have health checks; every secret is
  declared and made by compose/make-secrets; every ${VAR} is one it writes into .env.
- Safe by default (decision 0028): every published port is bound to 127.0.0.1; no password is
  written in the file (each is a ${VAR} that compose/make-secrets writes into compose/.env);
  every process that talks to Kafka signs in as its own principal; the development token
  endpoint (a signing key in the order service) exists only in docker-compose.dev.yml.
- The Grafana dashboard parses and every panel queries something.
- Every process of system.toml runs in a service of that name, listening, checked and published
  at its port, and Prometheus scrapes it there under a job of its name; a peer's URL
  (`ORDER__PEERS__*`) names a service at its port. Ports are ${<NAME>_PORT} in the file, so
  these are checked on the file as compose reads it: with the .env compose/make-secrets wrote
  (MADE, a scratch run of it), whose ports must be system.toml's.
- Every metric named in the dashboard and the alert rules is one the services export: the
  names come from the binaries themselves (CATALOGUES holds each process's
  /metrics/catalogue, scripts/check-compose gathers them), with the series names Prometheus
  stores (_total, _seconds_bucket...).

Usage: check_compose.py COMPOSE_DIR CATALOGUES MADE
"""

import json
import pathlib
import re
import sys

import yaml

compose_dir = pathlib.Path(sys.argv[1])
catalogues = pathlib.Path(sys.argv[2])
made = pathlib.Path(sys.argv[3])  # what compose/make-secrets wrote, in a scratch folder
root = compose_dir.parent
problems = []
sys.path.insert(0, str(root / "scripts/lib"))
import system  # noqa: E402 (the system's one description, system.toml)

made_env = dict(line.split("=", 1) for line in (made / ".env").read_text().splitlines()
                if line and not line.startswith("#"))


def interpolate(text):
    """The file as compose reads it: ${VAR}, ${VAR:?message} and ${VAR:-default} from .env."""
    def value(match):
        name, default = match.group(1), match.group(3)
        if name in made_env:
            return made_env[name]
        problems.append(f"${{{name}}} is used, but compose/make-secrets does not write it")
        return default or f"unset-{name}"
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:[?-])([^}]*))?\}", value, text)


raw_text = (compose_dir / "docker-compose.yml").read_text()
compose = yaml.safe_load(raw_text)  # as written: where passwords must not be
services = compose["services"]
for name, service in services.items():
    for dependency in service.get("depends_on", {}) or {}:
        if dependency not in services:
            problems.append(f"{name} depends on unknown service {dependency}")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith((".", "/")) and not (compose_dir / source).exists():
            problems.append(f"{name} mounts missing path {source}")
    build = service.get("build")
    if build and not (compose_dir / build["context"] / build["dockerfile"]).exists():
        problems.append(f"{name}: Dockerfile {build['dockerfile']} not found")
    long_running = service.get("restart") != "on-failure" and name not in ("prometheus", "grafana")
    if long_running and "healthcheck" not in service:
        problems.append(f"{name} has no health check")

# Secrets: each service names a declared secret, and each file is one compose/make-secrets writes.
declared = compose.get("secrets", {}) or {}
for name, service in services.items():
    for secret in service.get("secrets", []):
        secret = secret if isinstance(secret, str) else secret.get("source")
        if secret not in declared:
            problems.append(f"{name} uses undeclared secret {secret}")
for secret, spec in declared.items():
    file = spec.get("file", "")
    if not file or not (made / file).is_file():
        problems.append(f"secret {secret}: compose/make-secrets does not write {file}")

# Safe by default.
for name, service in services.items():
    for port in service.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"{name} publishes {port} on every interface (bind it to 127.0.0.1)")
    environment = service.get("environment", {}) or {}
    for key, value in environment.items():
        value = str(value)
        if "PASSWORD" in key and "${" not in value:
            problems.append(f"{name}: {key} is a password written in the file")
        if re.search(r"://[^/:@]+:(?!\$\{)[^@]+@", value):
            problems.append(f"{name}: {key} carries a password written in the file")
        if "DEV_SIGNING_KEY" in key:
            problems.append(f"{name}: {key} mints tokens for anyone; only docker-compose.dev.yml may set it")
    for prefix in {k[: -len("__KAFKA__BROKERS")] for k in environment if k.endswith("__KAFKA__BROKERS")}:
        for setting in ("USERNAME", "PASSWORD"):
            if f"{prefix}__KAFKA__{setting}" not in environment:
                problems.append(f"{name} talks to Kafka without {prefix}__KAFKA__{setting}")
dev = compose_dir / "docker-compose.dev.yml"
if not dev.exists() or "DEV_SIGNING_KEY_FILE" not in dev.read_text():
    problems.append("docker-compose.dev.yml, the only place for the development token endpoint, is missing")

# The system's processes, as system.toml describes them, against the file as compose reads it.
ports = {process["name"]: process["port"] for process in system.processes()}
services = yaml.safe_load(interpolate(raw_text))["services"]
scrape = yaml.safe_load((compose_dir / "prometheus/prometheus.yml").read_text())
targets = {}
for job in scrape["scrape_configs"]:
    groups = list(job.get("static_configs", []))
    for sd in job.get("file_sd_configs", []):
        for file in sd.get("files", []):
            path = made / "prometheus" / file
            if path.is_file():
                groups += json.loads(path.read_text())
            else:
                problems.append(f"prometheus.yml reads {file}, which compose/make-secrets does not write")
    for group in groups:
        job_name = group.get("labels", {}).get("job", job["job_name"])
        targets.setdefault(job_name, []).extend(group.get("targets", []))
for name, port in ports.items():
    service = services.get(name)
    if not service or service.get("command") != [name]:
        problems.append(f"{name} (system.toml) runs in no compose service of that name")
        continue
    prefix = system.process(name)["prefix"]
    listens = int((service.get("environment") or {}).get(f"{prefix}__HTTP__PORT", port))
    if listens != port:
        problems.append(f"{name} is told to listen on {listens}, but system.toml says {port}")
    health = " ".join(service.get("healthcheck", {}).get("test", []))
    if f"localhost:{port}/health" not in health:
        problems.append(f"{name}: the health check ({health}) does not ask localhost:{port}/health")
    for published in service.get("ports", []):
        if not str(published).endswith(f":{port}"):
            problems.append(f"{name} publishes {published}, but listens on {port}")
    if targets.get(name) != [f"{name}:{port}"]:
        problems.append(f"prometheus.yml scrapes {name} at {targets.get(name)}, not {name}:{port}")
for name, service in services.items():
    for key, value in (service.get("environment", {}) or {}).items():
        peer = re.fullmatch(r"http://([\w-]+):(\d+)/?", str(value)) if "__PEERS__" in key else None
        if peer and peer.group(1) in ports and int(peer.group(2)) != ports[peer.group(1)]:
            problems.append(f"{name}: {key}={value}, but {peer.group(1)} listens on {ports[peer.group(1)]}")

# Metric names the binaries register (their /metrics/catalogue).
exported = set()
for name in ports:
    path = catalogues / f"{name}.json"
    if not path.exists():
        problems.append(f"{name} listed no metrics ({path} is missing)")
        continue
    for metric in json.loads(path.read_text())["metrics"]:
        exported.update(metric["series"])
if not exported:
    problems.append("the binaries listed no metrics")

PROMQL_WORDS = {
    "sum", "by", "without", "rate", "increase", "histogram_quantile", "clamp_min", "max", "min",
    "avg", "on", "or", "and", "unless", "vector", "count", "le", "bool", "ignoring",
}
BUILTIN = {"up", "ALERTS"}


def metric_names(expr):
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", expr)  # numbers such as 1e-9
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and n not in BUILTIN and ":" not in n}


dashboard = json.loads((compose_dir / "grafana/dashboards/order-system.json").read_text())
exprs = []
for panel in dashboard["panels"]:
    targets = [t.get("expr", "") for t in panel.get("targets", [])]
    if not any(targets):
        problems.append(f"panel {panel.get('title')!r} queries nothing")
    exprs += [(f"dashboard panel {panel.get('title')!r}", e) for e in targets]
rules = yaml.safe_load((compose_dir / "prometheus/alerts.yml").read_text())
for group in rules["groups"]:
    for rule in group["rules"]:
        exprs.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
for where, expr in exprs:
    for name in sorted(metric_names(expr) - exported):
        problems.append(f"{where} uses {name}, which no service exports")

if problems:
    print("compose/ has problems:", *problems, sep="\n  ")
    sys.exit(1)
print(f"compose/: {len(services)} services, {len(dashboard['panels'])} dashboard panels, "
      f"{len(exprs)} queries; every metric they name is exported")
