package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/internal/syncfile"
)

func newDeviceCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "device",
		Short: "Register, list, show, disable, enable, remove or export devices (MQTT logins of the embedded broker); their shadows",
	})
	af := addAdminFlags(cmd, true)
	cmd.AddCommand(newDeviceAddCmd(af), newDeviceListCmd(af), newDeviceShowCmd(af),
		newDeviceStateCmd(af, "disable", "Disable a device: it is disconnected and refused until enabled", true),
		newDeviceStateCmd(af, "enable", "Enable a disabled device", false),
		newDeviceRemoveCmd(af), newDeviceExportMosquittoCmd(af), newDeviceShadowCmd(af))
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

func newDeviceExportMosquittoCmd(af *adminFlags) *cobra.Command {
	var pwFile, aclFile string
	cmd := &cobra.Command{
		Use:   "export-mosquitto --password-file FILE --acl-file FILE",
		Short: "Write a Mosquitto 2 password file and ACL file enforcing the devices' logins and access rules",
		Args:  cli.NoArgs,
	}
	cmd.Flags().StringVar(&pwFile, "password-file", "", "the Mosquitto password_file to write (mode 0600, replaced whole)")
	cmd.Flags().StringVar(&aclFile, "acl-file", "", "the Mosquitto acl_file to write (mode 0644, replaced whole)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if pwFile == "" || aclFile == "" {
			return cli.Usagef("give both --password-file FILE and --acl-file FILE")
		}
		c, err := af.client()
		if err != nil {
			return configError(cmd, err)
		}
		f, err := c.ExportMosquitto(cmd.Context())
		if err != nil {
			return err
		}
		if err := replaceFile(pwFile, 0o600, f.PasswordFile); err != nil {
			return err
		}
		if err := replaceFile(aclFile, 0o644, f.ACLFile); err != nil {
			return err
		}
		e := cmd.ErrOrStderr()
		fmt.Fprintf(e, "wrote %d devices to %s and %s\n", len(f.Devices), pwFile, aclFile)
		if len(f.Disabled) > 0 {
			fmt.Fprintf(e, "left out %d disabled devices: %s\n", len(f.Disabled), strings.Join(f.Disabled, ", "))
		}
		if len(f.NoHash) > 0 {
			fmt.Fprintf(e, "left out %d devices registered before Outpost kept a Mosquitto hash of their secret (remove and add them again for a new secret): %s\n",
				len(f.NoHash), strings.Join(f.NoHash, ", "))
		}
		return nil
	}
	return cmd
}

// replaceFile writes content to a new file beside path and renames it
// over path, so a broker reading path sees the old file or the new one.
func replaceFile(path string, mode os.FileMode, content string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp) // left by an interrupted export
	if err := syncfile.WriteNew(tmp, mode, strings.NewReader(content)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
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
