package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/config"
)

// adminFlags locate the daemon's admin API.
type adminFlags struct {
	addr, config string
}

// addAdminFlags adds --admin and --config to cmd (to its subcommands too
// when persistent).
func addAdminFlags(cmd *cobra.Command, persistent bool) *adminFlags {
	a := &adminFlags{}
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVar(&a.addr, "admin", "", "admin API address (default: $OUTPOST_ADMIN, else admin.listen of --config, else 127.0.0.1:7700)")
	fs.StringVar(&a.config, "config", "", "read the admin address from this config file")
	return a
}

// client returns a client of the admin API the flags name.
func (a *adminFlags) client() (*admin.Client, error) {
	switch {
	case a.addr != "":
		return admin.NewClient(a.addr), nil
	case os.Getenv("OUTPOST_ADMIN") != "":
		return admin.NewClient(os.Getenv("OUTPOST_ADMIN")), nil
	case a.config != "":
		cfg, err := config.Load(a.config)
		if err != nil {
			return nil, err
		}
		return admin.NewClient(cfg.Admin.Listen), nil
	}
	return admin.NewClient(config.Defaults().Admin.Listen), nil
}

// completeTasks completes a task name from the running daemon.
func (a *adminFlags) completeTasks(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	tasks, err := c.Tasks(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	names := make([]string, 0, len(tasks))
	for _, t := range tasks {
		names = append(names, t.Name+"\t"+t.Module)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeCalls completes a call id from the running daemon's journal.
func (a *adminFlags) completeCalls(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := a.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	recs, err := c.Calls(cmd.Context(), 0)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		ids = append(ids, r.ID+"\t"+r.Task+" "+r.State.String())
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
