package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/outpost-edge/outpost/internal/store"
)

func openSpool(t *testing.T, db *store.DB, max int64) *Spool {
	t.Helper()
	s := NewSpool(max, nil, nil)
	if err := s.Open(context.Background(), db, db.Bucket("cloudmsgs")); err != nil {
		t.Fatal(err)
	}
	return s
}

func appendWait(t *testing.T, s *Spool, msgs ...Message) error {
	t.Helper()
	done := make(chan error, 1)
	if err := s.Append(msgs, func(err error) { done <- err }); err != nil {
		return err
	}
	return <-done
}

// The spool takes messages up to its cap and refuses the next one (never
// dropping one it took), hands them out oldest first, keeps them across a
// reopen, and frees room as they are removed.
func TestSpool(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	msg := func(i int) Message { return NewMessage(fmt.Sprintf("devices/d1/up/%d", i), make([]byte, 100), 1) }
	per := msg(0).size()
	s := openSpool(t, db, 3*per)
	woke := 0
	s.SetNotify(func() { woke++ })
	for i := range 3 {
		if err := appendWait(t, s, msg(i)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := appendWait(t, s, msg(3)); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("a fourth message over the cap: %v", err)
	}
	if n, b := s.Len(); n != 3 || b != 3*per || woke != 3 {
		t.Fatalf("len %d, %d bytes, %d notifications", n, b, woke)
	}
	s.Close()
	if err := s.Append([]Message{msg(9)}, func(error) { t.Error("done after close") }); !errors.Is(err, ErrStopped) {
		t.Errorf("append after close: %v", err)
	}

	s = openSpool(t, db, 3*per)
	defer s.Close()
	if n, _ := s.Len(); n != 3 {
		t.Fatalf("after reopen: %d messages", n)
	}
	batch, err := s.peek(2, 1<<20)
	if err != nil || len(batch) != 2 || batch[0].Topic != "devices/d1/up/0" || batch[1].Topic != "devices/d1/up/1" || batch[0].ID == batch[1].ID {
		t.Fatalf("peek: %v %+v", err, batch)
	}
	if err := s.remove(batch); err != nil {
		t.Fatal(err)
	}
	if err := appendWait(t, s, msg(4), msg(5)); err != nil {
		t.Fatalf("after removal there is room for two: %v", err)
	}
	all, _ := s.peek(10, 150) // about 150 bytes of payload: one message (at least one goes)
	if len(all) != 1 || all[0].Topic != "devices/d1/up/2" {
		t.Errorf("peek by bytes: %+v", all)
	}
	all, _ = s.peek(10, 1<<20)
	if len(all) != 3 || all[1].Topic != "devices/d1/up/4" || all[2].seq <= all[1].seq {
		t.Errorf("order after reopen and append: %+v", all)
	}
}
