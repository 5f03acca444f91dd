package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigil-agent/vigil/runtime"
)

func newImageCommand() *cobra.Command {
	img := &cobra.Command{Use: "image", Short: "Manage images in the runtime's store"}
	imp := &cobra.Command{
		Use:   "import FILE...",
		Short: "Import OCI or docker image archives into containerd's CRI namespace",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			cfg, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			addr := cfg.containerdAddress()
			if addr == "" {
				return errors.New("runtime.containerd: importing needs containerd's socket")
			}
			ctrd, err := runtime.NewContainerd(addr, cfg.Runtime.Namespace)
			if err != nil {
				return fmt.Errorf("connect to containerd %s: %w", addr, err)
			}
			defer ctrd.Close()
			names, err := ctrd.ImportImages(cmd.Context(), files...)
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	addFlags(imp.Flags())
	img.AddCommand(imp)
	return img
}
