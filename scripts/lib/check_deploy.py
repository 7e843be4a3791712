"""Checks of the rendered deploy/ manifests that a schema cannot make, against the sources:

- every container runs a binary the Dockerfile puts in the image, from that image;
- its http port is where it listens (its <PREFIX>__HTTP__PORT, else its default), the probes
  and the Service point at it, readiness is /health and liveness /health/live;
- every process of system.toml runs in a Deployment, and a peer's URL (`ORDER__PEERS__*`)
  names a Service defined here at a port it serves;
- every environment variable `<PREFIX>__A__B` names a setting the service reads, so a misspelt
  name fails here instead of being ignored by the service.
  Ports and settings come from the binaries themselves: `<binary> describe` prints every
  setting with its default (DESCRIBED holds one `<binary>.json` per binary);
- every secret referenced is one CloudNativePG makes for a cluster defined here, one Strimzi
  makes for a KafkaUser or the Kafka cluster's CA, one defined here, or one docs/deploy.md
  tells the operator to create (`create secret generic NAME`);
- every process that talks to Kafka signs in (decision 0028): TLS, its own KafkaUser's name
  and that user's secret;
- every database cluster archives to the object store and has a ScheduledBackup, each
  ScheduledBackup names a cluster defined here, with CloudNativePG's six-field schedule;
- containers run as non-root with a read-only root filesystem;
- the KafkaTopics are kafka-init's topics with its settings (`kafka-init --describe`); the PrometheusRule is
  compose/prometheus/alerts.yml.

Usage: check_deploy.py ROOT RENDERED.yaml DESCRIBED   (prints problems, exit 1 if any;
DESCRIBED/../kafka-init.json is `kafka-init --describe`)
"""

import json
import pathlib
import re
import sys

import yaml

root = pathlib.Path(sys.argv[1])
docs = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[2]).read_text()) if d]
problems = []

# --- the sources ---------------------------------------------------------------------------
described = {}  # binary -> {"prefix": ..., "settings": {...defaults...}}
for path in sorted(pathlib.Path(sys.argv[3]).glob("*.json")):
    described[path.stem] = json.loads(path.read_text())
top = {d["prefix"]: d["settings"] for d in described.values()}
ports = {binary: d["settings"]["http"]["port"] for binary, d in described.items()}
binaries = set(re.findall(r"target/release/([\w-]+)", (root / "compose/Dockerfile").read_text()))


# The standard OpenTelemetry variables every process reads beside its settings.
otel_variables = {name for d in described.values() for name in d["variables"]}


def env_problem(name):
    """Why `name` is not a setting its service reads, or None."""
    if name in otel_variables:
        return None
    prefix, _, rest = name.partition("__")
    settings = top.get(prefix)
    if settings is None:
        return f"{name}: no service reads the prefix {prefix}"
    parts = rest.lower().split("__")
    for i, part in enumerate(parts):
        if not isinstance(settings, dict) or part not in settings:
            known = ", ".join(sorted(settings)) if isinstance(settings, dict) else "nothing below it"
            return f"{name}: {part!r} is not a setting here (known: {known})"
        settings = settings[part]
        if isinstance(settings, dict) or i == len(parts) - 1:
            continue
        return f"{name}: {part!r} is a plain value; it has no {parts[i + 1]!r}"
    if isinstance(settings, dict):
        return f"{name}: names a group of settings ({', '.join(sorted(settings))}), not one"
    return None


# --- the resources -------------------------------------------------------------------------
clusters = {d["metadata"]["name"] for d in docs if d["kind"] == "Cluster"}
kafka_users = {d["metadata"]["name"] for d in docs if d["kind"] == "KafkaUser"}
external_secrets = set(re.findall(r"create secret generic ([\w-]+)", (root / "docs/deploy.md").read_text()))
external_secrets |= kafka_users
external_secrets |= {f"{d['metadata']['name']}-cluster-ca-cert" for d in docs if d["kind"] == "Kafka"}
external_secrets |= {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
services_by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
sys.path.insert(0, str(root / "scripts/lib"))
import system  # noqa: E402 (the system's one description, system.toml)

deployed = {(c.get("command") or ["?"])[0] for d in docs if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]}
for process in system.processes():
    if process["name"] not in deployed:
        problems.append(f"{process['name']} (system.toml) runs in no Deployment")
# Images of other projects the deployment runs as they are, pinned to the compose stack's.
third_party = {"jaegertracing/jaeger"}
for d in docs:
    if d["kind"] != "Deployment":
        continue
    name = d["metadata"]["name"]
    pod = d["spec"]["template"]["spec"]
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append(f"{name}: the pod does not require a non-root user")
    for container in pod["containers"]:
        where = f"{name}/{container['name']}"
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            problems.append(f"{where}: the root filesystem is writable")
        if container["image"].split(":")[0] in third_party:
            continue  # another project's image (Jaeger): its own ports, probes and settings
        if not container["image"].split(":")[0].endswith("order-system"):
            problems.append(f"{where}: image {container['image']} is not the one compose/Dockerfile builds")
        binary = (container.get("command") or ["?"])[0]
        if binary not in binaries:
            problems.append(f"{where}: runs {binary!r}, which compose/Dockerfile does not put in the image")
        declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        # Where it listens: what its environment tells it, else its default (system.toml's).
        told = [e.get("value") for e in container.get("env", [])
                if e["name"] == f"{described.get(binary, {}).get('prefix')}__HTTP__PORT"]
        listens = int(told[0]) if told else ports.get(binary)
        if declared.get("http") != listens:
            problems.append(f"{where}: port 'http' is {declared.get('http')}, but {binary} listens on {listens}")
        for probe, path in [("readinessProbe", "/health"), ("livenessProbe", "/health/live"), ("startupProbe", "/health/live")]:
            get = container.get(probe, {}).get("httpGet")
            if not get:
                problems.append(f"{where}: no {probe}")
            elif get.get("path") != path or get.get("port") not in ("http", listens):
                problems.append(f"{where}: {probe} asks {get.get('port')}{get.get('path')}, not http{path}")
        for env in container.get("env", []):
            problem = env_problem(env["name"])
            if problem:
                problems.append(f"{where}: {problem}")
            if "__PEERS__" in env["name"] and "value" in env:
                peer = re.fullmatch(r"http://([\w-]+)(?::(\d+))?/?", env["value"])
                service = services_by_name.get(peer.group(1)) if peer else None
                if not service or int(peer.group(2) or 80) not in {p["port"] for p in service["spec"]["ports"]}:
                    problems.append(f"{where}: {env['name']}={env['value']} is no Service's port here")
            secret = env.get("valueFrom", {}).get("secretKeyRef")
            if secret and not (secret["name"] in external_secrets
                               or (secret["name"].endswith("-app") and secret["name"][:-4] in clusters)):
                problems.append(f"{where}: secret {secret['name']} is neither a cluster's nor a documented one")
        values = {env["name"]: env for env in container.get("env", [])}
        for prefix in {k[: -len("__KAFKA__BROKERS")] for k in values if k.endswith("__KAFKA__BROKERS")}:
            user = values.get(f"{prefix}__KAFKA__USERNAME", {}).get("value")
            password = values.get(f"{prefix}__KAFKA__PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if user not in kafka_users or password.get("name") != user or password.get("key") != "password":
                problems.append(f"{where}: does not sign in to Kafka as a KafkaUser with that user's secret")
            if values.get(f"{prefix}__KAFKA__TLS", {}).get("value") != "true":
                problems.append(f"{where}: talks to Kafka without TLS")
        service = services_by_name.get(name)
        if service and any(p.get("targetPort") not in ("http", declared.get("http")) for p in service["spec"]["ports"]):
            problems.append(f"service {name}: targetPort is not the pod's http port")

for d in docs:
    if d["kind"] == "TriggerAuthentication":
        for ref in d["spec"].get("secretTargetRef", []):
            if ref["name"] not in external_secrets:
                problems.append(f"TriggerAuthentication/{d['metadata']['name']}: secret {ref['name']} is made by nobody")

# Backups: every cluster archives and has a daily base backup; the store's secret is documented.
scheduled = {}
for d in docs:
    if d["kind"] == "ScheduledBackup":
        spec = d["spec"]
        scheduled[spec["cluster"]["name"]] = spec
        if spec["cluster"]["name"] not in clusters:
            problems.append(f"ScheduledBackup/{d['metadata']['name']}: no cluster {spec['cluster']['name']}")
        if len(spec["schedule"].split()) != 6:
            problems.append(f"ScheduledBackup/{d['metadata']['name']}: schedule {spec['schedule']!r} is not six fields (seconds first)")
for d in docs:
    if d["kind"] != "Cluster":
        continue
    name = d["metadata"]["name"]
    store = d["spec"].get("backup", {}).get("barmanObjectStore")
    if not store:
        problems.append(f"Cluster/{name}: no backup.barmanObjectStore: its WAL is not archived")
    else:
        for ref in store.get("s3Credentials", {}).values():
            if isinstance(ref, dict) and ref.get("name") not in external_secrets:
                problems.append(f"Cluster/{name}: backup secret {ref.get('name')} is not one docs/deploy.md creates")
    if name not in scheduled:
        problems.append(f"Cluster/{name}: no ScheduledBackup")

# Topics: kafka-init's defaults and names.
kafka_init = json.loads((pathlib.Path(sys.argv[3]).parent / "kafka-init.json").read_text())
partitions = kafka_init["partitions"]
retention_ms = kafka_init["retention_ms"]
expected = set(kafka_init["topics"])
found = set()
for d in docs:
    if d["kind"] != "KafkaTopic":
        continue
    spec = d["spec"]
    found.add(spec["topicName"])
    config = spec.get("config", {})
    if spec.get("partitions") != partitions:
        problems.append(f"topic {spec['topicName']}: {spec.get('partitions')} partitions, kafka-init makes {partitions}")
    if int(config.get("retention.ms", -1)) != retention_ms:
        problems.append(f"topic {spec['topicName']}: retention.ms {config.get('retention.ms')}, kafka-init sets {retention_ms}")
    if int(config.get("min.insync.replicas", -1)) != max(spec.get("replicas", 1) - 1, 1):
        problems.append(f"topic {spec['topicName']}: min.insync.replicas is not replicas - 1")
if found != expected:
    problems.append(f"topics {sorted(found)} are not kafka-init's {sorted(expected)}")

rules = [d for d in docs if d["kind"] == "PrometheusRule"]
alerts = yaml.safe_load((root / "compose/prometheus/alerts.yml").read_text())
if len(rules) != 1 or rules[0]["spec"]["groups"] != alerts["groups"]:
    problems.append("the PrometheusRule is not compose/prometheus/alerts.yml (scripts/check-deploy --write-rules)")

# The operators' resources, against schemas written from their pinned CRDs.
import jsonschema  # noqa: E402 (kubernetes-validate brings it)

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from operator_schemas import SCHEMAS  # noqa: E402

builtin_groups = ("v1", "apps", "policy", "autoscaling", "networking.k8s.io", "batch")
for d in docs:
    if d["apiVersion"].split("/")[0] in builtin_groups:
        continue
    schema = SCHEMAS.get((d["apiVersion"], d["kind"]))
    where = f"{d['kind']}/{d['metadata'].get('name')}"
    if schema is None:
        problems.append(f"{where}: no schema for {d['apiVersion']} {d['kind']} in scripts/lib/operator_schemas.py")
        continue
    for error in jsonschema.Draft7Validator(schema).iter_errors(d):
        at = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"{where}: {at}: {error.message}")

for problem in problems:
    print(problem)
kinds = sorted({d["kind"] for d in docs})
print(f"{len(docs)} resources ({', '.join(kinds)}): {len(problems)} problems")
sys.exit(1 if problems else 0)
