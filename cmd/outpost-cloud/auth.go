package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/internal/secretfile"
)

// tokenFileEnv names the default of --token-file.
const tokenFileEnv = "OUTPOST_CLOUD_TOKEN_FILE"

// errOpenOperatorAPI: serve was asked to listen beyond loopback without an
// operator token.
var errOpenOperatorAPI = errors.New("refusing to serve the operator API without authentication on a non-loopback address: give --operator-token-file")

// apiFlags are the flags every operator API client subcommand takes.
type apiFlags struct {
	server, tokenFile string
}

func addServer(cmd *cobra.Command) *apiFlags {
	f := &apiFlags{}
	cmd.Flags().StringVar(&f.server, "server", envOr("OUTPOST_CLOUD", "http://127.0.0.1:8480"), "control plane URL ($OUTPOST_CLOUD)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", os.Getenv(tokenFileEnv), "file holding the operator API's bearer token ($"+tokenFileEnv+")")
	return f
}

func (f *apiFlags) api() *api { return newAPI(f.server, f.tokenFile) }

// completeNodes completes a node id from the running control plane.
func (f *apiFlags) completeNodes(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	nodes, err := f.api().nodes(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// authorize adds the operator token, read from its file on every request
// (a rotated token is used at once).
func (a *api) authorize(req *http.Request) error {
	if a.tokenFile == "" {
		return nil
	}
	tok, err := secretfile.ReadToken(a.tokenFile)
	if err != nil {
		return fmt.Errorf("read operator token (--token-file): %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+string(tok))
	return nil
}

// checkOperatorAuth refuses an open operator API on an address reachable
// from other hosts; on loopback it is allowed, with a warning.
func checkOperatorAuth(addr net.Addr, tokenFile string, log *slog.Logger) error {
	if tokenFile != "" {
		return nil
	}
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return fmt.Errorf("listen %s: %w", addr, errOpenOperatorAPI)
	}
	log.Warn("operator API has no authentication (loopback only; give --operator-token-file to require a token)", "listen", addr.String())
	return nil
}
