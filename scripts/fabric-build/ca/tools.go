//go:build tools

// Package tools pins the Fabric CA commands built by scripts/build_fabric.sh.
package tools

import (
	_ "github.com/hyperledger/fabric-ca/cmd/fabric-ca-client"
	_ "github.com/hyperledger/fabric-ca/cmd/fabric-ca-server"
)
