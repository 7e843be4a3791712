"""JSON schemas for the operators' resources that deploy/ uses, strict about unknown fields
(an object accepts only the properties listed). Written by hand, for the fields deploy/ sets,
from the CRDs of the pinned operator versions (docs/deploy.md): Strimzi 0.45.0
(`packaging/install/cluster-operator/040-Crd-kafka.yaml`, `04A-Crd-kafkanodepool.yaml`,
`043-Crd-kafkatopic.yaml`, `044-Crd-kafkauser.yaml`), KEDA's `keda.sh_triggerauthentications.yaml`, CloudNativePG v1.25.0 (`postgresql.cnpg.io_clusters.yaml`,
`postgresql.cnpg.io_scheduledbackups.yaml`),
KEDA v2.16.0 (`keda.sh_scaledobjects.yaml`), Prometheus Operator v0.79.0
(`monitoring.coreos.com_servicemonitors.yaml`, `…_prometheusrules.yaml`). Types, enums,
patterns, minimums and required fields are the CRDs'. A field deploy/ starts to use must be
added here, after reading it in the CRD of the pinned version.
"""

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# x-kubernetes-preserve-unknown-fields in the CRD: any keys.
OPEN = {"type": "object"}
# Prometheus durations, as the CRDs pattern them.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
QUANTITIES = {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}


def strict(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


SECRET_KEY = strict({"name": STRING, "key": STRING}, ["key", "name"])
BARMAN_COMPRESSION = {"type": "string", "enum": ["gzip", "bzip2", "snappy"]}
RESOURCES = strict({"requests": QUANTITIES, "limits": QUANTITIES})
METADATA = strict({"name": STRING, "namespace": STRING, "labels": STRING_MAP, "annotations": STRING_MAP}, ["name"])


def resource(api_version, kind, spec):
    return strict(
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
        ["apiVersion", "kind", "metadata", "spec"],
    )


LISTENER = strict(
    {
        "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": {"enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]},
        "tls": BOOLEAN,
        "authentication": strict({"type": {"enum": ["tls", "scram-sha-512", "oauth", "custom"]}}, ["type"]),
    },
    ["name", "port", "type", "tls"],
)

ACL = strict({
    "resource": strict({
        "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
        "name": STRING,
        "patternType": {"enum": ["literal", "prefix"]},
    }, ["type"]),
    "operations": {"type": "array", "items": {"enum": [
        "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
        "DescribeConfigs", "IdempotentWrite", "All"]}},
    "host": STRING,
}, ["resource"])

SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "Kafka"): resource("kafka.strimzi.io/v1beta2", "Kafka", strict({
        "kafka": strict({
            "version": STRING,
            "listeners": {"type": "array", "items": LISTENER},
            "authorization": strict({"type": {"enum": ["simple", "opa", "keycloak", "custom"]},
                                     "superUsers": {"type": "array", "items": STRING}}, ["type"]),
            "config": OPEN,
        }, ["listeners"]),
        "entityOperator": strict({"topicOperator": strict({}), "userOperator": strict({})}),
    }, ["kafka"])),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): resource("kafka.strimzi.io/v1beta2", "KafkaNodePool", strict({
        "replicas": {"type": "integer", "minimum": 0},
        "roles": {"type": "array", "items": {"enum": ["controller", "broker"]}},
        "storage": strict({
            "type": {"enum": ["ephemeral", "persistent-claim", "jbod"]},
            "size": STRING,
            "deleteClaim": BOOLEAN,
        }, ["type"]),
        "resources": RESOURCES,
        "jvmOptions": strict({
            "-Xms": {"type": "string", "pattern": "^[0-9]+[mMgG]?$"},
            "-Xmx": {"type": "string", "pattern": "^[0-9]+[mMgG]?$"},
        }),
    }, ["replicas", "storage", "roles"])),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): resource("kafka.strimzi.io/v1beta2", "KafkaUser", strict({
        "authentication": strict({"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}}, ["type"]),
        "authorization": strict({"type": {"enum": ["simple"]}, "acls": {"type": "array", "items": ACL}}, ["acls", "type"]),
    })),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): resource("kafka.strimzi.io/v1beta2", "KafkaTopic", strict({
        "topicName": STRING,
        "partitions": {"type": "integer", "minimum": 1},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
        "config": OPEN,
    })),
    ("postgresql.cnpg.io/v1", "Cluster"): resource("postgresql.cnpg.io/v1", "Cluster", strict({
        "instances": {"type": "integer", "minimum": 1},
        "imageName": STRING,
        "postgresql": strict({
            "parameters": STRING_MAP,
            "synchronous": strict({
                "method": {"type": "string", "enum": ["any", "first"]},
                "number": {"type": "integer", "minimum": 1},
                "dataDurability": {"type": "string", "enum": ["required", "preferred"]},
            }, ["method", "number"]),
        }),
        "bootstrap": strict({"initdb": strict({
            "database": STRING,
            "owner": STRING,
            "postInitApplicationSQL": {"type": "array", "items": STRING},
        })}),
        "storage": strict({"size": STRING}),
        "resources": RESOURCES,
        "backup": strict({
            "retentionPolicy": {"type": "string", "pattern": "^[1-9][0-9]*[dwm]$"},
            "target": {"type": "string", "enum": ["primary", "prefer-standby"]},
            "barmanObjectStore": strict({
                "destinationPath": STRING,
                "endpointURL": STRING,
                "serverName": STRING,
                "s3Credentials": strict({
                    "accessKeyId": SECRET_KEY,
                    "secretAccessKey": SECRET_KEY,
                    "region": SECRET_KEY,
                    "inheritFromIAMRole": BOOLEAN,
                }),
                "wal": strict({"compression": BARMAN_COMPRESSION, "maxParallel": INTEGER}),
                "data": strict({"compression": BARMAN_COMPRESSION, "jobs": INTEGER, "immediateCheckpoint": BOOLEAN}),
            }, ["destinationPath"]),
        }),
    })),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): resource("postgresql.cnpg.io/v1", "ScheduledBackup", strict({
        "cluster": strict({"name": STRING}, ["name"]),
        "schedule": STRING,
        "backupOwnerReference": {"type": "string", "enum": ["none", "self", "cluster"]},
        "immediate": BOOLEAN,
        "suspend": BOOLEAN,
        "method": {"type": "string", "enum": ["barmanObjectStore", "volumeSnapshot", "plugin"]},
        "target": {"type": "string", "enum": ["primary", "prefer-standby"]},
    }, ["cluster", "schedule"])),
    ("keda.sh/v1alpha1", "ScaledObject"): resource("keda.sh/v1alpha1", "ScaledObject", strict({
        "scaleTargetRef": strict({"name": STRING}, ["name"]),
        "minReplicaCount": INTEGER,
        "maxReplicaCount": INTEGER,
        "triggers": {"type": "array", "items": strict({
            "type": STRING,
            "metadata": STRING_MAP,
            "authenticationRef": strict({"name": STRING, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}, ["name"]),
        }, ["metadata", "type"])},
    }, ["scaleTargetRef", "triggers"])),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): resource("keda.sh/v1alpha1", "TriggerAuthentication", strict({
        "secretTargetRef": {"type": "array", "items": strict({"parameter": STRING, "name": STRING, "key": STRING},
                                                              ["key", "name", "parameter"])},
    })),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): resource("monitoring.coreos.com/v1", "ServiceMonitor", strict({
        "selector": strict({"matchLabels": STRING_MAP}),
        "endpoints": {"type": "array", "items": strict({"port": STRING, "path": STRING, "interval": DURATION})},
        "jobLabel": STRING,
    }, ["endpoints", "selector"])),
    ("monitoring.coreos.com/v1", "PrometheusRule"): resource("monitoring.coreos.com/v1", "PrometheusRule", strict({
        "groups": {"type": "array", "items": strict({
            "name": STRING,
            "rules": {"type": "array", "items": strict({
                "record": STRING,
                "alert": STRING,
                "expr": {"type": ["string", "integer"]},
                "for": DURATION,
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            }, ["expr"])},
        }, ["name"])},
    })),
}
