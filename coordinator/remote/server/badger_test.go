package server

import (
	"fmt"
	"sync"
	"testing"
)

// Concurrent writes of calls share group commits (fewer syncs than
// writers), and every one of them is there after a reopen.
func TestBadgerGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s, err := openBadger(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if _, err := s.enqueue(t.Context(), []Call{{ID: fmt.Sprint("c", i), Node: fmt.Sprint("n", i%7), Task: "t"}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	commits := s.commits.Load()
	t.Logf("%d writers, %d commits", writers, commits)
	if commits < 1 || commits >= writers {
		t.Fatalf("%d commits for %d concurrent writers, want fewer", commits, writers)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s, err = openBadger(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if len(s.calls) != writers {
		t.Fatalf("%d calls after a reopen, want %d", len(s.calls), writers)
	}
}
