package main

import (
	"fmt"
	"io"

	"github.com/vigil-agent/vigil/manifest"
)

// check validates the manifests and prints one line per problem, each naming
// the file, the object and the field. It fails when there is any.
func check(out io.Writer, cfg *Config) error {
	set, err := manifest.Load(cfg.Manifests)
	if err != nil {
		return fmt.Errorf("--manifests: %w", err)
	}
	for _, e := range set.Errors {
		fmt.Fprintln(out, e)
	}
	if n := len(set.Errors); n > 0 {
		return fmt.Errorf("%d problem(s) in %s", n, cfg.Manifests)
	}
	fmt.Fprintf(out, "%s: %d workloads, %d services, %d ingresses, %d secrets: ok\n", cfg.Manifests,
		len(set.Workloads), len(set.Services), len(set.Ingresses), len(set.Secrets))
	return nil
}
