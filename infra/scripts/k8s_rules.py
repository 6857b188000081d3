#!/usr/bin/env python3
"""Checks one rendered set of Kubernetes manifests (kustomize or helm output).

    k8s_rules.py [--coverage] [--k8s-version 1.30]... FILE...

Every document of every FILE (multi-document YAML, `-` for stdin) is one
render (the Chaos Mesh experiments are checked together with the render
of the app they aim at), checked in three stages:

1. core kinds against Kubernetes' own schemas (kubernetes-validate, strict:
   unknown fields are errors), for each --k8s-version; kinds of a custom
   resource are left to stage 2;
2. SpinKube's SpinApp and SpinAppExecutor, and Chaos Mesh's PodChaos,
   NetworkChaos and StressChaos, against infra/k8s/schemas/*.json; any
   other kind of those two API groups is an error (no schema);
3. what the spin-operator's admission webhook refuses (replicas together
   with enableAutoscaling, replicas below 1 without it, an executor that is
   not in the SpinApp's namespace), and what would only fail once running:
   components spin.toml does not define, a chained call
   (http://<id>.spin.internal) to a component of another unit (bv serves
   those in-process only), variables spin.toml does not declare or requires
   and are not set, a value (literal, or from a Secret in the render) that
   allowed_outbound_hosts cannot take (redis_url with a password),
   autoscalers on a SpinApp the operator keeps scaling, selectors that
   match no pod (budgets, network policies, Chaos Mesh experiments and
   their targets; an experiment must name its pods by labels, expressions
   or names), references to Secrets, ConfigMaps and ServiceAccounts the
   render lacks. With --coverage, every component of spin.toml must be run
   by exactly one SpinApp.

Each finding is a line `error: <Kind>/<name>: <message>`; exit 1 if any.
A `warning:` line (exit 0) says a component reads a URL variable whose
host its allowed_outbound_hosts do not list, where the render shows the
value (the dev overlay's example Secrets).
It runs in the venv infra/scripts/k8s-validate.sh installs (PyYAML,
jsonschema, kubernetes-validate).
"""

import argparse
import base64
import functools
import json
import re
import sys
import tomllib
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate.utils as kv
import yaml

REPO = Path(__file__).resolve().parents[2]
SPIN_GROUP = "core.spinkube.dev"
CHAOS_GROUP = "chaos-mesh.org"
# Custom resources checked against infra/k8s/schemas: a kind of these
# groups without a schema here is an error.
SCHEMAS = {
    (SPIN_GROUP, "SpinApp"): "spinapp.json",
    (SPIN_GROUP, "SpinAppExecutor"): "spinappexecutor.json",
    (CHAOS_GROUP, "PodChaos"): "chaos-mesh-podchaos.json",
    (CHAOS_GROUP, "NetworkChaos"): "chaos-mesh-networkchaos.json",
    (CHAOS_GROUP, "StressChaos"): "chaos-mesh-stresschaos.json",
}
SCHEMA_GROUPS = {g for g, _ in SCHEMAS}
# Custom resources whose schema we do not have; their rules still apply.
OTHER_CRD_GROUPS = {"keda.sh"}
SPINAPP_POD_LABEL = "core.spinkube.dev/app-name"
CHAINED = re.compile(r"^https?://([a-z0-9-]+)\.spin\.internal(:\d+)?/?$")
TEMPLATE = re.compile(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}")
# What bv's allowed_outbound_hosts takes once a template is rendered.
ALLOW_ENTRY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@?#\s]+/?$")

# kubernetes-validate reads its (large) schema files on every call.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)


class Findings:
    def __init__(self):
        self.errors = []
        self.warnings = []

    def add(self, doc, message):
        self.errors.append(f"error: {ref(doc)}: {message}")

    def warn(self, doc, message):
        self.warnings.append(f"warning: {ref(doc)}: {message}")


def ref(doc):
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')}/{name}"


def group(doc):
    api = doc.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def namespace(doc):
    return (doc.get("metadata") or {}).get("namespace")


def load(paths):
    docs = []
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise SystemExit(f"{path}: a document without apiVersion and kind")
            if doc["kind"].endswith("List") and "items" in doc:
                docs.extend(doc["items"])
            else:
                docs.append(doc)
    return docs


def load_app(spin_toml):
    with open(spin_toml, "rb") as f:
        manifest = tomllib.load(f)
    components = manifest.get("component", {})
    variables = manifest.get("variables", {})
    callees, allow_vars, hosts_of, uses = {}, {}, {}, {}
    for cid, component in components.items():
        hosts = component.get("allowed_outbound_hosts", [])
        hosts_of[cid] = hosts
        # bv-websocket.spin.internal is bv's own WebSocket interface, not a component.
        callees[cid] = sorted({m.group(1) for h in hosts
                               if (m := CHAINED.match(h)) and m.group(1) != "bv-websocket"})
        allow_vars[cid] = {v for h in hosts for v in TEMPLATE.findall(h)}
        # Application variables a component reads whole ("{{ db_url }}").
        uses[cid] = {m.group(1) for t in component.get("variables", {}).values()
                     if (m := TEMPLATE.fullmatch(str(t).strip()))}
    required = sorted(
        name for name, v in variables.items() if v.get("required") and "default" not in v
    )
    return {"components": set(components), "variables": set(variables),
            "required": required, "callees": callees, "allow_vars": allow_vars,
            "hosts": hosts_of, "uses": uses}


# --- stage 1: core kinds -------------------------------------------------

def check_core(docs, versions, findings):
    checked, skipped = 0, set()
    for doc in docs:
        if group(doc) in SCHEMA_GROUPS or group(doc) in OTHER_CRD_GROUPS:
            if group(doc) in OTHER_CRD_GROUPS:
                skipped.add(doc["kind"])
            continue
        checked += 1
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = "/".join(str(p) for p in e.path) or "(document)"
                findings.add(doc, f"Kubernetes {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                findings.add(doc, e.message)
    return checked, skipped


# --- stage 2: SpinKube's and Chaos Mesh's custom resources ----------------

def check_custom(docs, schemas, findings):
    """{group: documents checked} against infra/k8s/schemas."""
    validators = {}
    for key, file in SCHEMAS.items():
        schema = json.loads((schemas / file).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[key] = jsonschema.Draft202012Validator(schema)
    checked = {g: 0 for g in SCHEMA_GROUPS}
    for doc in docs:
        if group(doc) not in SCHEMA_GROUPS:
            continue
        validator = validators.get((group(doc), doc["kind"]))
        if validator is None:
            findings.add(doc, f"no schema for kind {doc['kind']} of {group(doc)}")
            continue
        checked[group(doc)] += 1
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            path = "/".join(str(p) for p in e.path) or "(document)"
            findings.add(doc, f"schema: {path}: {e.message}")
    return checked


# --- stage 3: rules -------------------------------------------------------

def selector_matches(selector, labels):
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pods(docs):
    """(namespace, labels, owner) of every pod template the render makes."""
    out = []
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "SpinApp":
            labels = dict(spec.get("podLabels") or {})
            labels[SPINAPP_POD_LABEL] = doc["metadata"]["name"]
            out.append((namespace(doc), labels, doc))
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            out.append((namespace(doc), labels, doc))
    return out


def pod_annotations(owner):
    spec = owner.get("spec") or {}
    if owner["kind"] == "SpinApp":
        return spec.get("podAnnotations") or {}
    return ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}


def check_chaos_selectors(docs, templates, findings):
    """A Chaos Mesh experiment (and a NetworkChaos' target) must hit pods of
    the render: its selector's labels, expressions and annotations must all
    hold for some pod template in one of its namespaces (by default the
    experiment's own). Node, field and phase criteria depend on the running
    cluster and are not judged; a selector naming pods by name is taken on
    trust. An empty selector would hit every pod of the namespace."""
    for doc in docs:
        if group(doc) != CHAOS_GROUP or (group(doc), doc["kind"]) not in SCHEMAS:
            continue
        spec = doc.get("spec") or {}
        selectors = [("selector", spec.get("selector"))]
        if isinstance(spec.get("target"), dict):
            selectors.append(("target.selector", spec["target"].get("selector")))
        for where, selector in selectors:
            if not isinstance(selector, dict):
                continue  # the schema says so
            if selector.get("pods"):
                continue
            if not any(selector.get(k) for k in ("labelSelectors", "expressionSelectors", "annotationSelectors")):
                findings.add(doc, f"spec.{where} names no labels, expressions, annotations or pods: Chaos Mesh would hit every pod of its namespaces")
                continue
            namespaces = selector.get("namespaces") or [namespace(doc)]
            as_k8s = {"matchLabels": selector.get("labelSelectors") or {},
                      "matchExpressions": selector.get("expressionSelectors") or []}
            wanted = selector.get("annotationSelectors") or {}
            if not any(ns in namespaces and selector_matches(as_k8s, labels)
                       and all(pod_annotations(owner).get(k) == v for k, v in wanted.items())
                       for ns, labels, owner in templates):
                shown = {k: selector[k] for k in ("namespaces", "labelSelectors", "expressionSelectors", "annotationSelectors") if k in selector}
                findings.add(doc, f"spec.{where} {json.dumps(shown, sort_keys=True)} matches no pod of the render in namespace {', '.join(n or '(unset)' for n in namespaces)}")


def secret_refs(doc):
    """(secret, key, optional) of every secretKeyRef in a SpinApp or pod template."""
    spec = doc.get("spec") or {}
    sources = []
    if doc["kind"] == "SpinApp":
        sources = [v.get("valueFrom") or {} for v in spec.get("variables") or []]
    else:
        pod = (spec.get("template") or {}).get("spec") or {}
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            sources += [e.get("valueFrom") or {} for e in c.get("env") or []]
    out = []
    for s in sources:
        if "secretKeyRef" in s:
            r = s["secretKeyRef"]
            out.append((r.get("name"), r.get("key"), bool(r.get("optional"))))
    return out


DEFAULT_PORTS = {"postgres": 5432, "redis": 6379, "rediss": 6379, "mqtt": 1883, "http": 80, "https": 443}


def endpoint(url):
    """(scheme, host, port) of a URL, or None."""
    try:
        u = urllib.parse.urlsplit(url)
        return u.scheme, (u.hostname or "").lower(), u.port or DEFAULT_PORTS.get(u.scheme)
    except ValueError:
        return None


def check_reachable(doc, app, runs, values, findings):
    """Warns when components read a URL variable (db_url, redis_url) whose
    host their allowed_outbound_hosts do not list: bv starts, but each of
    their connections there is refused. Only values the render shows count."""
    refused = {}
    for cid in sorted(runs):
        for name in sorted(app["uses"].get(cid, set()) & set(values)):
            target = endpoint(values[name])
            if not target or target[0] not in DEFAULT_PORTS or not target[1]:
                continue
            rendered = [TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), e)
                        for e in app["hosts"].get(cid, [])]
            if any("{{" in e for e in rendered):
                continue  # a value the render does not show: cannot tell
            allowed = [endpoint(e) for e in rendered]
            if not any(a and a[0] == target[0] and a[1] in (target[1], "*") and a[2] == target[2]
                       for a in allowed):
                refused.setdefault((name, target), []).append(cid)
    for (name, (scheme, host, port)), cids in sorted(refused.items()):
        findings.warn(doc, f"{', '.join(cids)} read `{name}` ({scheme}://{host}:{port}), which their allowed_outbound_hosts in spin.toml do not list: their connections there would be refused")


def secret_values(docs):
    """{(namespace, name): {key: value}} of the render's Secrets."""
    out = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            values = {k: base64.b64decode(v).decode(errors="replace")
                      for k, v in (doc.get("data") or {}).items()}
            values.update(doc.get("stringData") or {})
            out[(namespace(doc), doc["metadata"]["name"])] = values
    return out


def check_rules(docs, app, coverage, findings):
    spinapps = [d for d in docs if d["kind"] == "SpinApp"]
    secrets = secret_values(docs)
    executors = {(namespace(d), d["metadata"]["name"]) for d in docs if d["kind"] == "SpinAppExecutor"}
    by_name = {(namespace(d), d["metadata"]["name"]): d for d in spinapps}
    deployed = {c: [] for c in app["components"]}

    for doc in spinapps:
        spec = doc.get("spec") or {}
        name = doc["metadata"]["name"]
        autoscaled = spec.get("enableAutoscaling") is True
        replicas = spec.get("replicas", 0)
        # The admission webhook's rules (spin-operator 0.6).
        if autoscaled and replicas != 0:
            findings.add(doc, "replicas cannot be set when autoscaling is enabled (admission webhook)")
        if not autoscaled and isinstance(replicas, int) and replicas < 1:
            findings.add(doc, "replicas must be > 0 when enableAutoscaling is not true (admission webhook; the operator has no default)")
        executor = spec.get("executor")
        if executor and (namespace(doc), executor) not in executors:
            findings.add(doc, f"executor `{executor}` does not exist in namespace {namespace(doc) or '(unset)'} (no such SpinAppExecutor in the render; admission webhook)")

        components = spec.get("components")
        runs = set(app["components"]) if components is None else set(components)
        for cid in components or []:
            if cid not in app["components"]:
                findings.add(doc, f"component `{cid}` is not a component of spin.toml (bv stops at start); it has: {', '.join(sorted(app['components']))}")
        for cid in sorted(runs & app["components"]):
            deployed[cid].append(name)
            for callee in app["callees"].get(cid, []):
                if callee not in runs:
                    findings.add(doc, f"component `{cid}` calls http://{callee}.spin.internal, which this SpinApp does not run: bv serves chained requests in-process only and would answer 502 component-not-deployed")

        variables = [v.get("name") for v in spec.get("variables") or []]
        for var in variables:
            if var not in app["variables"]:
                findings.add(doc, f"variable `{var}` is not declared in spin.toml's [variables] (SPIN_VARIABLE_{str(var).upper()} would be ignored)")
        for dup in sorted({v for v in variables if variables.count(v) > 1}):
            findings.add(doc, f"variable `{dup}` is set twice")
        for var in app["required"]:
            if var not in variables:
                findings.add(doc, f"variable `{var}` is required by spin.toml and not set: bv resolves every application variable at start, whichever components it runs")
        values = {}
        for var in spec.get("variables") or []:
            value = var.get("value")
            secret = ((var.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if value is None and secret:
                value = secrets.get((namespace(doc), secret.get("name")), {}).get(secret.get("key"))
            if value is not None:
                values[var.get("name")] = value.strip()
        # A variable rendered into allowed_outbound_hosts must come out as
        # scheme://host[:port]; anything else stops bv at start.
        # Each entry is rendered with the values the render shows
        # (`postgres://{{ db_host }}` with db_host = `postgres:5432`).
        bad = set()
        for cid in runs:
            for entry in app["hosts"].get(cid, []):
                names = TEMPLATE.findall(entry)
                if not names or any(n not in values for n in names):
                    continue
                rendered = TEMPLATE.sub(lambda m: values[m.group(1)], entry)
                if not ALLOW_ENTRY.match(rendered):
                    bad.update(names)
        for name in sorted(bad):
            findings.add(doc, f"variable `{name}` is rendered into allowed_outbound_hosts, which takes scheme://host[:port] only (no user, password, path or query): bv would stop at start")
        check_reachable(doc, app, runs, values, findings)

    if coverage:
        for cid, apps in sorted(deployed.items()):
            if len(apps) != 1:
                findings.errors.append(
                    f"error: spin.toml component `{cid}` is deployed by {len(apps)} SpinApps"
                    + (f" ({', '.join(apps)})" if apps else "") + "; every component must be deployed by exactly one")

    # Autoscalers: the operator leaves a SpinApp's Deployment (named after
    # it) to an autoscaler only with enableAutoscaling; otherwise it resets
    # the replica count the autoscaler sets.
    deployments = {(namespace(d), d["metadata"]["name"]) for d in docs if d["kind"] == "Deployment"}
    scaled = {}
    for doc in docs:
        if doc["kind"] not in ("HorizontalPodAutoscaler", "ScaledObject"):
            continue
        target = (doc.get("spec") or {}).get("scaleTargetRef") or {}
        kind = target.get("kind", "Deployment")
        key = (namespace(doc), target.get("name"))
        if kind != "Deployment":
            continue
        scaled.setdefault(key, []).append(ref(doc))
        app_doc = by_name.get(key)
        if app_doc is not None:
            if (app_doc.get("spec") or {}).get("enableAutoscaling") is not True:
                findings.add(doc, f"scales SpinApp {key[1]}, whose enableAutoscaling is not true: the operator would reset its replicas")
        elif key not in deployments:
            findings.add(doc, f"scales Deployment {key[1]}, which neither a SpinApp nor a Deployment of the render (namespace {key[0] or '(unset)'}) makes")
    for key, owners in scaled.items():
        if len(owners) > 1:
            findings.errors.append(f"error: Deployment {key[1]} has {len(owners)} autoscalers ({', '.join(owners)}); they would fight")
    for doc in spinapps:
        key = (namespace(doc), doc["metadata"]["name"])
        if (doc.get("spec") or {}).get("enableAutoscaling") is True and key not in scaled:
            findings.add(doc, "enableAutoscaling is true but no autoscaler in the render targets Deployment " + key[1])

    # Selectors.
    templates = pods(docs)
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "PodDisruptionBudget":
            selector = spec.get("selector") or {}
        elif doc["kind"] == "NetworkPolicy":
            selector = spec.get("podSelector") or {}
            if not selector:
                continue  # the whole namespace
        elif doc["kind"] == "Deployment":
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector_matches(spec.get("selector") or {}, labels):
                findings.add(doc, "spec.selector does not match the pod template's labels")
            continue
        else:
            continue
        if not any(ns == namespace(doc) and selector_matches(selector, labels)
                   for ns, labels, _ in templates):
            findings.add(doc, f"selector {json.dumps(selector, sort_keys=True)} matches no pod of the render")
    check_chaos_selectors(docs, templates, findings)

    # References.
    configmaps = {(namespace(d), d["metadata"]["name"]) for d in docs if d["kind"] == "ConfigMap"}
    accounts = {(namespace(d), d["metadata"]["name"]) for d in docs if d["kind"] == "ServiceAccount"}
    for doc in docs:
        if doc["kind"] not in ("SpinApp", "Deployment"):
            continue
        spec = doc.get("spec") or {}
        pod = spec if doc["kind"] == "SpinApp" else (spec.get("template") or {}).get("spec") or {}
        account = pod.get("serviceAccountName")
        if account and account != "default" and (namespace(doc), account) not in accounts:
            findings.add(doc, f"ServiceAccount `{account}` is not in the render")
        for volume in pod.get("volumes") or []:
            cm = (volume.get("configMap") or {})
            if cm and not cm.get("optional") and (namespace(doc), cm.get("name")) not in configmaps:
                findings.add(doc, f"ConfigMap `{cm.get('name')}` (volume {volume.get('name')}) is not in the render")
        # Secrets are checked only in a render that carries Secrets (the
        # dev overlay's examples); elsewhere the cluster provides them.
        if not secrets:
            continue
        wanted = [(n, k) for n, k, optional in secret_refs(doc) if not optional]
        loaded = ((spec.get("runtimeConfig") or {}).get("loadFromSecret")) if doc["kind"] == "SpinApp" else None
        if loaded:
            wanted.append((loaded, "runtime-config.toml"))
        for name, key in wanted:
            keys = secrets.get((namespace(doc), name))
            if keys is None:
                findings.add(doc, f"Secret `{name}` is not in the render")
            elif key not in keys:
                findings.add(doc, f"Secret `{name}` has no key `{key}` (it has: {', '.join(sorted(keys))})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--spin-toml", type=Path, default=REPO / "spin.toml")
    parser.add_argument("--schemas", type=Path, default=REPO / "infra/k8s/schemas")
    parser.add_argument("--k8s-version", action="append", dest="versions")
    parser.add_argument("--coverage", action="store_true",
                        help="every component of spin.toml must be deployed by exactly one SpinApp")
    args = parser.parse_args()
    versions = args.versions or ["1.30"]

    docs = load(args.files)
    app = load_app(args.spin_toml)
    findings = Findings()
    core, skipped = check_core(docs, versions, findings)
    custom = check_custom(docs, args.schemas, findings)
    check_rules(docs, app, args.coverage, findings)

    for line in findings.warnings + findings.errors:
        print(line)
    note = f"; not schema-checked: {', '.join(sorted(skipped))}" if skipped else ""
    chaos = f" and {custom[CHAOS_GROUP]} Chaos Mesh" if custom[CHAOS_GROUP] else ""
    print(f"{len(docs)} documents: {core} core-kind against Kubernetes {', '.join(versions)}, "
          f"{custom[SPIN_GROUP]} SpinKube{chaos} against the schemas, rules{' and coverage' if args.coverage else ''}"
          f"{note}: {len(findings.errors)} error{'' if len(findings.errors) == 1 else 's'}"
          f"{f', {len(findings.warnings)} warnings' if findings.warnings else ''}")
    return 1 if findings.errors else 0


if __name__ == "__main__":
    sys.exit(main())
