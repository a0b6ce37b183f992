// Builds the Fabric v3.1.5 node binaries from their Go module (see scripts/build_fabric.sh).
// Fabric's module path has no /v3 suffix, so v3.1.5 is required by its commit's pseudo-version.
module twinledger.local/fabricbuild/fabric

go 1.26

require github.com/hyperledger/fabric v1.4.0-rc1.0.20260618074816-86c1172bec37
