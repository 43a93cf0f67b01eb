package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
)

// newDeviceShadowCmd is `outpost device shadow`: a device's shadows
// through the admin API, the same service devices use over MQTT.
func newDeviceShadowCmd(af *adminFlags) *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "shadow",
		Short: "List, show, update or delete a device's shadows (AWS IoT device shadows)",
	})
	cmd.AddCommand(newShadowListCmd(af), newShadowShowCmd(af), newShadowUpdateCmd(af), newShadowRemoveCmd(af))
	return cmd
}

func addShadowName(cmd *cobra.Command) *string {
	return cmd.Flags().String("name", "", "a named shadow (default: the classic shadow)")
}

func newShadowListCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ls ID", Short: "List a device's shadows", Args: cli.ExactArgs(1, "")}
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		ss, err := c.Shadows(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), ss, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", shadowLabel(s.Name), s.Version, out.Time(time.Unix(s.Timestamp, 0)))
			}
			_ = tw.Flush()
		})
	}
	return cmd
}

func newShadowShowCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "show ID", Short: "Show a shadow: desired, reported, delta, metadata and version", Args: cli.ExactArgs(1, "")}
	name := addShadowName(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		d, err := c.Shadow(cmd.Context(), args[0], *name)
		if err != nil {
			return err
		}
		return cli.WriteJSON(cmd.OutOrStdout(), d)
	}
	return cmd
}

func newShadowUpdateCmd(af *adminFlags) *cobra.Command {
	var desired, data string
	var version int64
	cmd := &cobra.Command{
		Use:   "update ID (--desired JSON | --data REQUEST)",
		Short: "Update a shadow: the device hears of it on update/accepted, update/delta and update/documents",
		Example: `  outpost device shadow update d1 --desired '{"led":"on"}'
  outpost device shadow update d1 --name config --desired '{"interval":30}' --version 4
  outpost device shadow update d1 --data '{"state":{"reported":null}}'`,
		Args: cli.ExactArgs(1, ""),
	}
	name := addShadowName(cmd)
	cmd.Flags().StringVar(&desired, "desired", "", "a JSON object merged into the desired state (a null field is deleted)")
	cmd.Flags().StringVar(&data, "data", "", "the whole AWS update request, "+cli.DataHelp)
	cmd.Flags().Int64Var(&version, "version", 0, "with --desired: refuse the update unless the shadow is at this version")
	cmd.MarkFlagsMutuallyExclusive("desired", "data")
	cmd.MarkFlagsOneRequired("desired", "data")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var req []byte
		if cmd.Flags().Changed("desired") {
			if !json.Valid([]byte(desired)) {
				return cli.Usagef("--desired %q: not JSON", desired)
			}
			body := map[string]any{"state": map[string]json.RawMessage{"desired": json.RawMessage(desired)}}
			if version > 0 {
				body["version"] = version
			}
			req, _ = json.Marshal(body)
		} else {
			var err error
			if req, err = cli.ReadInput(data, true, cmd.InOrStdin()); err != nil {
				return err
			}
		}
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		acc, err := c.UpdateShadow(cmd.Context(), args[0], *name, req)
		if err != nil {
			return err
		}
		return cli.WriteJSON(cmd.OutOrStdout(), acc)
	}
	return cmd
}

func newShadowRemoveCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "rm ID", Short: "Delete a shadow (its version goes on if it is created again)", Args: cli.ExactArgs(1, "")}
	name := addShadowName(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		if _, err := c.DeleteShadow(cmd.Context(), args[0], *name); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "deleted shadow %s of %s\n", shadowLabel(*name), args[0])
		return nil
	}
	return cmd
}

func shadowLabel(name string) string {
	if name == "" {
		return "(classic)"
	}
	return name
}
