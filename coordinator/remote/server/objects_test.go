package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/internal/pgtest"
)

// Objects: put by content (201, then 200 for the same bytes), listed with
// their fetch counts, served to nodes with the poll's authentication,
// refused over the size cap; enqueue checks that a call's digest exists,
// and the digest reaches the node in the polled call.
func TestObjects(t *testing.T) { forEngines(t, testObjects) }

func testObjects(t *testing.T, e *engine) {
	s, ts := e.serve(Options{MaxObject: 1 << 10, Tokens: map[string]string{"tok1": "n1"}})
	hs := ts.URL
	body := []byte("\x00asm fake module bytes")
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	putObj := func(b []byte) (int, ObjectInfo) {
		resp, err := http.Post(hs+"/api/v1/objects", "application/octet-stream", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var info ObjectInfo
		_ = json.NewDecoder(resp.Body).Decode(&info)
		return resp.StatusCode, info
	}
	if code, info := putObj(body); code != 201 || info.Digest != digest || info.Size != int64(len(body)) {
		t.Fatalf("put: %d %+v, want 201 %s", code, info, digest)
	}
	if code, _ := putObj(body); code != 200 {
		t.Fatalf("put again: %d, want 200", code)
	}
	if code, _ := putObj(bytes.Repeat([]byte("x"), 1<<10+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("put over the cap: %d, want 413", code)
	}

	get := func(node, tok, d string) (int, []byte) {
		req, _ := http.NewRequest("GET", hs+"/edge/v1/nodes/"+node+"/objects/"+d, nil)
		req.Header.Set(remote.HeaderProtocol, remote.Protocol)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	tests := []struct {
		name, node, tok, digest string
		want                    int
	}{
		{"no token", "n1", "", digest, 401},
		{"another node's token", "n2", "tok1", digest, 403},
		{"unknown object", "n1", "tok1", "sha256:" + strings.Repeat("0", 64), 404},
		{"not a digest", "n1", "tok1", "sha256:XYZ", 400},
		{"served", "n1", "tok1", digest, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := get(tc.node, tc.tok, tc.digest)
			if code != tc.want {
				t.Fatalf("GET object: %d %s, want %d", code, b, tc.want)
			}
			if code == 200 && !bytes.Equal(b, body) {
				t.Fatalf("served %q, want %q", b, body)
			}
		})
	}
	if n := s.ObjectFetches(digest); n != 1 {
		t.Fatalf("fetches %d, want 1 (refused requests are not fetches)", n)
	}
	var list struct{ Objects []ObjectInfo }
	resp, err := http.Get(hs + "/api/v1/objects")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Objects) != 1 || list.Objects[0].Digest != digest || list.Objects[0].Fetches != 1 {
		t.Fatalf("list %+v", list.Objects)
	}

	items, err := s.Enqueue([]Call{
		{ID: "a", Node: "n1", Task: "t", Digest: digest},
		{ID: "b", Node: "n1", Task: "t", Digest: "sha256:" + strings.Repeat("1", 64)},
		{ID: "c", Node: "n1", Task: "t", Digest: "md5:00"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !items[0].Created || items[1].Error == "" || !strings.Contains(items[1].Error, "no such object") || items[2].Error == "" {
		t.Fatalf("enqueue items %+v", items)
	}
	tk, _, err := s.st.beginPoll(t.Context(), "n1", &remote.PollRequest{BootID: "b", Capacity: 10})
	if err != nil {
		t.Fatal(err)
	}
	wcs, err := s.st.take(t.Context(), tk)
	s.st.endPoll(tk, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(wcs) != 1 || wcs[0].Digest != digest {
		t.Fatalf("polled calls %+v, want call a with its digest", wcs)
	}
}

// On PostgreSQL objects live in the database: an object put through one
// replica (its own object directory) is listed, accepted in calls and
// served to nodes by another with a directory of its own, which keeps a
// checked copy; an object of several chunks comes back whole.
func TestObjectsShared(t *testing.T) {
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pgtest.Shared(t).NewDatabase()}
	a, _ := e.serve(Options{})
	b, hsb := e.serve(Options{Dir: t.TempDir()})
	body := bytes.Repeat([]byte("0123456789abcdef"), objectChunk/16*2+100) // two chunks and a bit
	info, err := a.PutObject(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.ObjectPath(info.Digest)); !os.IsNotExist(err) {
		t.Fatalf("replica b has a file before any use: %v", err)
	}
	var list struct{ Objects []ObjectInfo }
	getJSON(t, hsb.URL+"/api/v1/objects", http.StatusOK, &list)
	if len(list.Objects) != 1 || list.Objects[0] != info {
		t.Fatalf("objects on b: %+v, want %+v", list.Objects, info)
	}
	if items, err := b.Enqueue([]Call{{ID: "c", Node: "n", Task: "t", Digest: info.Digest}}); err != nil || items[0].Error != "" {
		t.Fatalf("enqueue naming the object on b: %+v %v", items, err)
	}
	req, _ := http.NewRequest("GET", hsb.URL+"/edge/v1/nodes/n/objects/"+info.Digest, nil)
	req.Header.Set(remote.HeaderProtocol, remote.Protocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("fetch through b: %s, %d bytes", resp.Status, len(got))
	}
	if copied, err := os.ReadFile(b.ObjectPath(info.Digest)); err != nil || !bytes.Equal(copied, body) {
		t.Fatalf("b's copy: %d bytes, %v", len(copied), err)
	}
	// The same bytes through b again: stored already.
	resp, err = http.Post(hsb.URL+"/api/v1/objects", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("put again through b: %s, want 200", resp.Status)
	}
}

// A replica's object directory from before the objects moved into the
// database: its objects are put into the database when it opens, so
// another replica serves them.
func TestObjectsImported(t *testing.T) {
	e := &engine{t: t, name: "postgres", dir: t.TempDir(), store: pgtest.Shared(t).NewDatabase()}
	old, err := Open(Options{Dir: t.TempDir()}) // badger: files only
	if err != nil {
		t.Fatal(err)
	}
	info, err := old.PutObject(strings.NewReader("an object from before"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(old.ObjectPath(info.Digest))
	_ = old.Close()
	e.serve(Options{ObjectDir: dir})
	b, _ := e.serve(Options{Dir: t.TempDir()})
	f, err := b.objs.open(t.Context(), info.Digest)
	if err != nil {
		t.Fatalf("the object put before, through another replica: %v", err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "an object from before" {
		t.Fatalf("got %q", got)
	}
}
