// Command vigil is a node agent: it runs the pods described by Kubernetes
// manifests on a CRI runtime, probes them as the kubelet does, restarts them
// by their restart policy, and routes Ingress traffic to the ready ones.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "vigil",
		Short:         "Run, probe, restart and route Kubernetes pods on one host",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newRunCommand(), newCheckCommand(), newImageCommand())
	root.AddCommand(clientCommands()...)
	return root
}

func newRunCommand() *cobra.Command {
	return manifestsCommand("run", "Run the pods, probes and ingress proxy described by the manifests",
		func(cmd *cobra.Command, cfg *Config) error { return run(cmd.Context(), cfg) })
}

func newCheckCommand() *cobra.Command {
	return manifestsCommand("check", "Validate the config and the manifests without running anything",
		func(cmd *cobra.Command, cfg *Config) error { return check(cmd.OutOrStdout(), cfg) })
}

// manifestsCommand is a command that takes the config options and a
// required manifests directory, and hands the loaded config to do.
func manifestsCommand(use, short string, do func(*cobra.Command, *Config) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			if cfg.Manifests == "" {
				return fmt.Errorf("--manifests: a directory of manifests is required")
			}
			return do(cmd, cfg)
		},
	}
	addFlags(cmd.Flags())
	return cmd
}

func newLogger(format, level string) *slog.Logger {
	lvl, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}
