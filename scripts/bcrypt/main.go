// btrfs-layers-bcrypt: prints an htpasswd line ("user:bcrypt-hash") for the registry tests'
// basic-auth mode. The registry's htpasswd reads bcrypt only, and neither Node nor the test
// machines have a bcrypt of their own, so scripts/test-tools.sh builds this beside the registry.
// Usage: btrfs-layers-bcrypt USER < password
package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/bcrypt"
)

// Bumped with every change, so that scripts/test-tools.sh rebuilds a cached binary.
const version = "btrfs-layers-bcrypt 1"

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-version" {
		fmt.Println(version)
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: btrfs-layers-bcrypt USER < password")
		os.Exit(2)
	}
	password, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The minimum cost: the hash guards throwaway test passwords, and each test start pays it.
	hash, err := bcrypt.GenerateFromPassword(password, bcrypt.MinCost)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s:%s\n", os.Args[1], hash)
}
