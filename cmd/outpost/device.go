package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/devices"
)

func newDeviceCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "device",
		Short: "Register, list, show, disable, enable or remove devices (MQTT logins of the embedded broker); their shadows",
	})
	af := addAdminFlags(cmd, true)
	cmd.AddCommand(newDeviceAddCmd(af), newDeviceListCmd(af), newDeviceShowCmd(af),
		newDeviceStateCmd(af, "disable", "Disable a device: it is disconnected and refused until enabled", true),
		newDeviceStateCmd(af, "enable", "Enable a disabled device", false),
		newDeviceRemoveCmd(af), newDeviceShadowCmd(af))
	return cmd
}

func newDeviceAddCmd(af *adminFlags) *cobra.Command {
	var groups []string
	cmd := &cobra.Command{Use: "add ID", Short: "Register a device and print its generated secret (shown once)", Args: cli.ExactArgs(1, "")}
	cmd.Flags().StringSliceVar(&groups, "group", nil, "a group whose rules the device gets (mqtt.broker.groups); repeat or comma-separate")
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		a, err := c.AddDevice(cmd.Context(), args[0], groups)
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), a, func(w io.Writer) {
			fmt.Fprintf(cmd.ErrOrStderr(), "added device %s; its secret (MQTT username %s, password below) is shown only now:\n", a.Device.ID, a.Device.ID)
			fmt.Fprintln(w, a.Secret)
		})
	}
	return cmd
}

func newDeviceListCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ls", Short: "List the registered devices", Args: cli.NoArgs}
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		ds, err := c.Devices(cmd.Context())
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), ds, func(w io.Writer) { printDevices(w, out, ds) })
	}
	return cmd
}

func newDeviceShowCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "show ID", Short: "Show one device", Args: cli.ExactArgs(1, "")}
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		d, err := c.Device(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), d, func(w io.Writer) { printDevices(w, out, []devices.Device{d}) })
	}
	return cmd
}

func newDeviceStateCmd(af *adminFlags, verb, short string, disable bool) *cobra.Command {
	cmd := &cobra.Command{Use: verb + " ID", Short: short, Args: cli.ExactArgs(1, "")}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		d, err := c.SetDeviceDisabled(cmd.Context(), args[0], disable)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "%s %s\n", d.ID, d.State())
		return nil
	}
	return cmd
}

func newDeviceRemoveCmd(af *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "rm ID", Short: "Remove a device: it is disconnected and its secret forgotten", Args: cli.ExactArgs(1, "")}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		if err := c.RemoveDevice(cmd.Context(), args[0]); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "removed device %s\n", args[0])
		return nil
	}
	return cmd
}

func printDevices(w io.Writer, o *cli.Output, ds []devices.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPRESENCE\tGROUPS\tLAST SEEN\tADDRESS")
	for _, d := range ds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.State(), presence(d), listOrNone(d.Groups), o.Time(d.LastSeen), dash(d.Address))
	}
	_ = tw.Flush()
}

// presence is "connected", "disconnected (REASON)", or "-" for a device
// not seen since the daemon started.
func presence(d devices.Device) string {
	switch {
	case d.Connected:
		return "connected"
	case d.DisconnectReason != "":
		return "disconnected (" + d.DisconnectReason + ")"
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
