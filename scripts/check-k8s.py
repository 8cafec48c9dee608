#!/usr/bin/env python3
"""Parses deploy/k8s/*.yaml and checks the fields the cluster depends on.

The manifests cannot be applied here (no Kubernetes); this catches YAML and
structural mistakes. Exits 1 with the problems listed.
"""
import glob
import re
import sys

import yaml

docs = []
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    with open(path) as f:
        docs += [d for d in yaml.safe_load_all(f) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)


(sts,) = by_kind.get("StatefulSet", [None])
check(sts is not None, "no StatefulSet")
headless = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") == "None"]
check(len(headless) == 1, "exactly one headless Service expected")
pdbs = by_kind.get("PodDisruptionBudget", [])
check(len(pdbs) == 1, "exactly one PodDisruptionBudget expected")
if sts and headless and pdbs:
    spec = sts["spec"]
    svc = headless[0]
    labels = spec["template"]["metadata"]["labels"]
    check(spec["serviceName"] == svc["metadata"]["name"], "serviceName is not the headless Service")
    check(svc["spec"].get("publishNotReadyAddresses") is True,
          "the headless Service must publish not-ready pods (peers meet before readiness)")
    check(spec["selector"]["matchLabels"].items() <= labels.items(), "selector does not match the pods")
    check(svc["spec"]["selector"].items() <= labels.items(), "Service selector does not match the pods")
    check(pdbs[0]["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PDB selector does not match")
    replicas = spec["replicas"]
    check(replicas % 2 == 1, "an odd number of voters is expected")
    check(pdbs[0]["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable must be 1 (quorum of 3)")
    (c,) = spec["template"]["spec"]["containers"]
    check("--node-id-from-hostname" in c.get("args", []), "node ids must come from the pod ordinal")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("TRIREME_LISTEN", "").startswith("0.0.0.0:"), "must listen on every interface")
    check(env.get("TRIREME_PEER_LISTEN", "").startswith("0.0.0.0:"),
          "the peer port must listen on every interface")
    peer_port = (env.get("TRIREME_PEER_LISTEN") or ":").rsplit(":", 1)[1]
    check(peer_port != (env.get("TRIREME_LISTEN") or ":").rsplit(":", 1)[1],
          "the client and peer ports must differ")
    name, svc_name = sts["metadata"]["name"], svc["metadata"]["name"]
    check(env.get("TRIREME_ADVERTISE", "").startswith(f"$(POD_NAME).{svc_name}."),
          "advertise must be the pod's name under the headless Service")
    check(env.get("TRIREME_PEER_ADVERTISE", "").startswith(f"$(POD_NAME).{svc_name}.")
          and env.get("TRIREME_PEER_ADVERTISE", "").endswith(f":{peer_port}"),
          "peer advertise must be the pod's name under the headless Service, on the peer port")
    check(any(p.get("port") == int(peer_port or 0) for p in svc["spec"].get("ports", [])),
          "the headless Service must expose the peer port")
    members = dict(m.split("=", 1) for m in env.get("TRIREME_INITIAL_CLUSTER", "").split(","))
    want = {str(i + 1): f"{name}-{i}.{svc_name}." for i in range(replicas)}
    check(set(members) == set(want), f"initial cluster ids {sorted(members)} != {sorted(want)}")
    for i, prefix in want.items():
        check(members.get(i, "").startswith(prefix), f"member {i} is not {prefix}...")
        check(members.get(i, "").endswith(f":{peer_port}"),
              f"member {i} must be named by its peer address (port {peer_port})")
    check(c["readinessProbe"].get("grpc", {}).get("port") == 7420, "readiness must use gRPC health on 7420")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    check(mounts.get("data") == env.get("TRIREME_DATA_DIR") and "data" in claims,
          "the data directory must be on the volume claim")
    for e in c["env"]:
        for ref in re.findall(r"\$\((\w+)\)", e.get("value") or ""):
            check(ref in env and env[ref] is None, f"{e['name']} refers to undefined $({ref})")
if problems:
    print("deploy/k8s: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"deploy/k8s: {len(docs)} objects parse and the StatefulSet, Services and PDB agree")
