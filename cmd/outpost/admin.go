package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
)

// adminFlags locate the daemon's admin API and its token.
type adminFlags struct {
	addr, config, dataDir, tokenFile, caFile, certFile, keyFile string
}

// addAdminFlags adds the flags that locate the admin API and its token to
// cmd (to its subcommands too when persistent).
func addAdminFlags(cmd *cobra.Command, persistent bool) *adminFlags {
	a := &adminFlags{}
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVar(&a.addr, "admin", "", "admin API address (default: $OUTPOST_ADMIN, else admin.listen of --config, else 127.0.0.1:7700; https://HOST:PORT for a TLS listener)")
	fs.StringVar(&a.config, "config", "", "the daemon's config file: its admin address and token file (admin.token_file, else admin.token in data_dir)")
	fs.StringVar(&a.dataDir, "data-dir", "", "the daemon's data `DIR`, as given to 'outpost run --data-dir' (its admin.token is the token)")
	fs.StringVar(&a.tokenFile, "token-file", "", "file holding the admin token (default: $"+admin.TokenEnv+", else the daemon's token file, else ./data/admin.token)")
	fs.StringVar(&a.caFile, "ca-file", "", "CA certificate that signed an https admin API's certificate (default: the system roots)")
	fs.StringVar(&a.certFile, "cert-file", "", "client certificate for an admin API that requires mTLS")
	fs.StringVar(&a.keyFile, "key-file", "", "key of --cert-file")
	return a
}

// client returns a client of the admin API the flags name, with the token
// found as admin.Dial documents.
func (a *adminFlags) client() (*admin.Client, error) {
	cfg := configs.Defaults()
	if a.config != "" {
		c, err := configs.Load(a.config)
		if err != nil {
			return nil, err
		}
		cfg = *c
	}
	if a.dataDir != "" {
		cfg.DataDir = a.dataDir
	}
	addr := a.addr
	switch {
	case addr != "":
	case os.Getenv("OUTPOST_ADMIN") != "":
		addr = os.Getenv("OUTPOST_ADMIN")
	case cfg.Admin.TLS.CertFile != "":
		addr = "https://" + cfg.Admin.Listen
	default:
		addr = cfg.Admin.Listen
	}
	return admin.Dial(admin.ClientOptions{
		Addr: addr, TokenFile: a.tokenFile, DaemonTokenFile: cfg.Admin.TokenPath(cfg.DataDir),
		CAFile: a.caFile, CertFile: a.certFile, KeyFile: a.keyFile,
	})
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
	recs, err := c.Calls(cmd.Context(), admin.CallsQuery{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		ids = append(ids, r.ID+"\t"+r.Task+" "+r.State.String())
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
