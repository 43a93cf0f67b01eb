package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// progressMin: files at least this large show upload progress.
const progressMin = 1 << 20

// cmdObject is `object put FILE` and `object ls`: code objects that calls
// name with --digest (docs/cloud-link.md "Code objects").
func cmdObject(ctx context.Context, args []string, _ io.Reader, out, errOut io.Writer) int {
	usage := "Usage: outpost-cloud object put FILE | outpost-cloud object ls"
	if len(args) == 0 {
		fmt.Fprintln(errOut, usage)
		return 2
	}
	switch args[0] {
	case "put":
		return cmdObjectPut(ctx, args[1:], out, errOut)
	case "ls":
		return cmdObjectList(ctx, args[1:], out, errOut)
	}
	fmt.Fprintf(errOut, "outpost-cloud object: unknown subcommand %q\n%s\n", args[0], usage)
	return 2
}

func cmdObjectPut(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("object put", errOut)
	srv := addServer(fs)
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(errOut, "Usage: outpost-cloud object put FILE")
		return 2
	}
	f, err := os.Open(pos[0])
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud object put: %v\n", err)
		return 2
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud object put: %v\n", err)
		return 2
	}
	var body io.Reader = f
	if st.Size() >= progressMin {
		body = &progressReader{r: f, total: st.Size(), w: errOut, name: pos[0]}
	}
	a := srv.api()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/api/v1/objects", body)
	if err == nil {
		err = a.authorize(req)
	}
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud object put: %v\n", err)
		return 1
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := a.hc.Do(req)
	if err != nil {
		fmt.Fprintf(errOut, "outpost-cloud object put %s: %v\n", pos[0], err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		fmt.Fprintf(errOut, "outpost-cloud object put %s: %s: %s\n", pos[0], resp.Status, strings.TrimSpace(string(b)))
		return 1
	}
	var info server.ObjectInfo
	if err := json.Unmarshal(b, &info); err != nil || !remote.ValidDigest(info.Digest) {
		fmt.Fprintf(errOut, "outpost-cloud object put %s: bad answer %q\n", pos[0], b)
		return 1
	}
	fmt.Fprintln(out, info.Digest)
	return 0
}

// progressReader prints a line to w at every tenth of total read.
type progressReader struct {
	r           io.Reader
	total, read int64
	shown       int64 // tenths shown
	w           io.Writer
	name        string
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	for p.shown < 10 && p.read*10 >= (p.shown+1)*p.total {
		p.shown++
		fmt.Fprintf(p.w, "%s: %d/%d bytes (%d%%)\n", p.name, min(p.read, p.total), p.total, p.shown*10)
	}
	return n, err
}

func cmdObjectList(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := newFlags("object ls", errOut)
	srv := addServer(fs)
	if _, code, ok := parse(fs, args); !ok {
		return code
	}
	var resp struct{ Objects []server.ObjectInfo }
	if err := srv.api().do(ctx, "GET", "/api/v1/objects", nil, &resp); err != nil {
		fmt.Fprintf(errOut, "outpost-cloud object ls: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tFETCHES")
	for _, o := range resp.Objects {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", o.Digest, o.Size, o.Fetches)
	}
	_ = tw.Flush()
	return 0
}

// checkDigest validates a --digest flag ("" is none).
func checkDigest(cmd, d string, errOut io.Writer) bool {
	if d == "" || remote.ValidDigest(d) {
		return true
	}
	fmt.Fprintf(errOut, "outpost-cloud %s: --digest %q: want sha256:HEX (64 lower-case hex digits, as `object put` prints)\n", cmd, d)
	return false
}
