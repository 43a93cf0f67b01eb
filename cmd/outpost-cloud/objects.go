package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-edge/outpost/cmd/internal/cli"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

func newObjectCmd() *cobra.Command {
	cmd := cli.Group(&cobra.Command{
		Use:   "object",
		Short: "Put a code object (prints sha256:HEX for --digest) or list them",
	})
	cmd.AddCommand(newObjectPutCmd(), newObjectListCmd())
	return cmd
}

// newObjectPutCmd is `object put FILE`: a code object that calls name
// with --digest (docs/cloud-link.md "Code objects").
func newObjectPutCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "put FILE", Short: "Upload a code object and print its digest (sha256:HEX)", Args: cli.ExactArgs(1, "")}
	srv := addServer(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		p := cli.NewProgress(cmd.ErrOrStderr(), args[0], st.Size())
		body := &sentReader{r: f, sent: p.Sent}
		a := srv.api()
		req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, a.base+"/api/v1/objects", body)
		if err == nil {
			err = a.authorize(req)
		}
		if err != nil {
			return err
		}
		req.ContentLength = st.Size()
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := a.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		var info server.ObjectInfo
		if err := json.Unmarshal(b, &info); err != nil || !remote.ValidDigest(info.Digest) {
			return fmt.Errorf("bad answer %q", b)
		}
		fmt.Fprintln(cmd.OutOrStdout(), info.Digest)
		return nil
	}
	return cmd
}

// sentReader reports the bytes read so far.
type sentReader struct {
	r    io.Reader
	n    int64
	sent func(int64)
}

func (s *sentReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	s.n += int64(n)
	s.sent(s.n)
	return n, err
}

func newObjectListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ls", Short: "List code objects", Args: cli.NoArgs}
	srv := addServer(cmd)
	out := cli.AddOutput(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var resp struct{ Objects []server.ObjectInfo }
		if err := srv.api().do(cmd.Context(), "GET", "/api/v1/objects", nil, &resp); err != nil {
			return err
		}
		return out.Print(cmd.OutOrStdout(), resp.Objects, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DIGEST\tSIZE\tFETCHES")
			for _, o := range resp.Objects {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", o.Digest, cli.Size(o.Size), o.Fetches)
			}
			_ = tw.Flush()
		})
	}
	return cmd
}

// checkDigest validates a --digest flag ("" is none).
func checkDigest(d string) error {
	if d == "" || remote.ValidDigest(d) {
		return nil
	}
	return cli.Usagef("--digest %q: want sha256:HEX (64 lower-case hex digits, as `object put` prints)", d)
}
