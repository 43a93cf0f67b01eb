package calls

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/outpost-edge/outpost/internal/cas"
)

// Snapshots keeps the state of suspended calls as content-addressed files
// (<dir>/<sha256 hex>), written with internal/cas: staged, then renamed to
// their digest, so a crash never leaves half a snapshot under a digest.
// A snapshot names its call and task (so two calls that keep the same
// bytes never share one file, and deleting one's snapshot cannot take the
// other's) and carries its format version:
//
//	"outpost-snapshot\n" | u16 version (1) | u16 len | call id | u16 len | task | u32 len | state
//
// Integers are big-endian. A journal record of a suspended call names its
// snapshot by digest (Record.Snapshot).
//
// The small states it wrote (up to smallState bytes, a workflow's
// progress) it also keeps in memory until they are deleted: a resume reads
// them without opening the file, which cost a fan-in about a tenth of its
// CPU. The file is written all the same, and read after a restart.
type Snapshots struct {
	dir string

	mu    sync.Mutex
	holds int                      // backups copying the directory
	held  []string                 // digests whose deletion waits for the holds to end
	small map[string]smallSnapshot // small states by digest (hex), until deleted
}

// smallState is the largest state Snapshots keeps in memory as well.
const smallState = 512

// smallSnapshot is a small state kept in memory, with its call.
type smallSnapshot struct {
	id    string
	state []byte
}

const (
	snapshotMagic   = "outpost-snapshot\n"
	snapshotVersion = 1
)

// ErrSnapshot: a snapshot is missing, does not match its digest, or has a
// format this version cannot read.
var ErrSnapshot = errors.New("snapshot unreadable")

// OpenSnapshots makes dir (and its parents) and returns the store in it.
func OpenSnapshots(dir string) (*Snapshots, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	return &Snapshots{dir: dir, small: map[string]smallSnapshot{}}, nil
}

func encodeSnapshot(id, task string, state []byte) []byte {
	b := make([]byte, 0, len(snapshotMagic)+2+2+len(id)+2+len(task)+4+len(state))
	b = append(b, snapshotMagic...)
	b = binary.BigEndian.AppendUint16(b, snapshotVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(task)))
	b = append(b, task...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(state)))
	return append(b, state...)
}

// decodeSnapshot returns the call id, task and state of a snapshot.
func decodeSnapshot(b []byte) (id, task string, state []byte, err error) {
	rest, ok := bytes.CutPrefix(b, []byte(snapshotMagic))
	if !ok || len(rest) < 2 {
		return "", "", nil, fmt.Errorf("%w: not a snapshot", ErrSnapshot)
	}
	if v := binary.BigEndian.Uint16(rest); v != snapshotVersion {
		return "", "", nil, fmt.Errorf("%w: format version %d, this version reads %d", ErrSnapshot, v, snapshotVersion)
	}
	rest = rest[2:]
	field := func(size int) ([]byte, bool) {
		if len(rest) < size {
			return nil, false
		}
		var n int
		if size == 2 {
			n = int(binary.BigEndian.Uint16(rest))
		} else {
			n = int(binary.BigEndian.Uint32(rest))
		}
		rest = rest[size:]
		if len(rest) < n {
			return nil, false
		}
		v := rest[:n]
		rest = rest[n:]
		return v, true
	}
	idb, ok1 := field(2)
	taskb, ok2 := field(2)
	state, ok3 := field(4)
	if !ok1 || !ok2 || !ok3 || len(rest) != 0 {
		return "", "", nil, fmt.Errorf("%w: truncated or trailing bytes", ErrSnapshot)
	}
	return string(idb), string(taskb), state, nil
}

// Put stores the state of call id of task and returns its digest
// ("sha256:HEX"). The file is complete under its name when Put returns
// (a crash of the process keeps it) but not fsynced, as the journal
// record naming it is not waited for: after a power failure either may be
// missing, and a call whose snapshot is missing runs again from its start
// (Durable.queueResume).
func (s *Snapshots) Put(id, task string, state []byte) (string, error) {
	st, err := cas.Stage(s.dir, ".stage-", bytes.NewReader(encodeSnapshot(id, task, state)))
	if err != nil {
		return "", fmt.Errorf("save snapshot of %s: %w", id, err)
	}
	defer st.Discard()
	if err := st.Close(); err != nil {
		return "", fmt.Errorf("save snapshot of %s: %w", id, err)
	}
	if err := st.Rename(filepath.Join(s.dir, st.Digest)); err != nil {
		return "", fmt.Errorf("save snapshot of %s: %w", id, err)
	}
	if len(state) <= smallState {
		s.mu.Lock()
		s.small[st.Digest] = smallSnapshot{id: id, state: bytes.Clone(state)}
		s.mu.Unlock()
	}
	return "sha256:" + st.Digest, nil
}

// Get reads the snapshot of digest, checks its bytes against the digest
// and that it belongs to call id, and returns the state.
func (s *Snapshots) Get(digest, id string) ([]byte, error) {
	hexd, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexd) != 64 {
		return nil, fmt.Errorf("%w: bad digest %q", ErrSnapshot, digest)
	}
	s.mu.Lock()
	sm, ok := s.small[hexd]
	s.mu.Unlock()
	if ok && sm.id == id {
		return sm.state, nil
	}
	b, err := os.ReadFile(filepath.Join(s.dir, hexd))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexd {
		return nil, fmt.Errorf("%w: %s does not match its digest", ErrSnapshot, digest)
	}
	got, _, state, err := decodeSnapshot(b)
	if err != nil {
		return nil, err
	}
	if got != id {
		return nil, fmt.Errorf("%w: %s belongs to call %s, not %s", ErrSnapshot, digest, got, id)
	}
	return state, nil
}

// Hold keeps snapshots from being deleted until release is called: a
// backup holds them from before it reads the journal until it has copied
// the directory, so every snapshot its journal names is in it. Deletions
// asked meanwhile happen at the last release.
func (s *Snapshots) Hold() (release func()) {
	s.mu.Lock()
	s.holds++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.holds--
			var due []string
			if s.holds == 0 {
				due, s.held = s.held, nil
			}
			s.mu.Unlock()
			for _, d := range due {
				_ = s.delete(d) // a failure leaves it to the sweep at the next start
			}
		})
	}
}

// remove deletes the snapshot of digest, or once the holds end (its copy
// in memory at once: no call resumes from it); a missing one is not an
// error.
func (s *Snapshots) remove(digest string) error {
	s.mu.Lock()
	delete(s.small, strings.TrimPrefix(digest, "sha256:"))
	if s.holds > 0 {
		s.held = append(s.held, digest)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return s.delete(digest)
}

func (s *Snapshots) delete(digest string) error {
	hexd, _ := strings.CutPrefix(digest, "sha256:")
	if hexd == "" || strings.ContainsAny(hexd, `/\.`) {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, hexd)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete snapshot %s: %w", digest, err)
	}
	return nil
}

// sweep deletes every file of the store that keep does not name (digests
// "sha256:HEX"): snapshots of calls that finished, and staged files a
// crash left. It returns how many it deleted.
func (s *Snapshots) sweep(keep map[string]bool) (int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("sweep snapshots: %w", err)
	}
	n := 0
	for _, e := range ents {
		if e.IsDir() || keep["sha256:"+e.Name()] {
			continue
		}
		s.mu.Lock()
		delete(s.small, e.Name())
		s.mu.Unlock()
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("sweep snapshots: %w", err)
		}
		n++
	}
	return n, nil
}
