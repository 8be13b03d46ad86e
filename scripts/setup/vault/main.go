// The stock Vault command line (`vault server -dev` for the backend tests), built from the Go module
// proxy at the release pinned in go.mod. This file only calls Vault's own entry point.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
