package cluster

import (
	"encoding/json"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// lockKVs is the election keys of targets t000.. each held by member a
// (revision 10+i), as the locks watch reads them.
func lockKVs(t *testing.T, n *Node, targets int) (map[string]*mvccpb.KeyValue, []string) {
	t.Helper()
	v, _ := json.Marshal(Member{Name: "a", GNMI: "127.0.0.1:1"})
	kvs := map[string]*mvccpb.KeyValue{}
	var keys []string
	for i := range targets {
		k := fmt.Sprintf("%s/locks/t%03d/1a", n.cfg.Prefix, i)
		kvs[k] = &mvccpb.KeyValue{Key: []byte(k), Value: v, CreateRevision: int64(10 + i)}
		keys = append(keys, k)
	}
	return kvs, keys
}

// The holder of a target is its election key created first; a change of
// one key is applied at the cost of that key, however many targets there
// are (each instance sees every lock change while a cluster settles).
func TestLocksWatchAppliesEachChangeOnce(t *testing.T) {
	n := New(Options{Cfg: Config{Name: "c", Prefix: "/outpost"}.WithDefaults("127.0.0.1:3")})
	kvs, keys := lockKVs(t, n, 3)
	n.locksChanged(kvs, keys, true)
	b, _ := json.Marshal(Member{Name: "b", GNMI: "127.0.0.1:2"})
	k := n.cfg.Prefix + "/locks/t001/2b"
	kvs[k] = &mvccpb.KeyValue{Key: []byte(k), Value: b, CreateRevision: 100}
	n.locksChanged(kvs, []string{k}, false) // b waits behind a
	if h, _ := n.Holder("t001"); h.Member != "a" || h.Epoch != 11 {
		t.Errorf("t001 with a waiter: holder %+v", h)
	}
	delete(kvs, keys[1])
	n.locksChanged(kvs, []string{keys[1]}, false) // a resigns: b holds
	if h, _ := n.Holder("t001"); h.Member != "b" || h.Epoch != 100 || h.GNMI != "127.0.0.1:2" {
		t.Errorf("t001 after a resigned: holder %+v", h)
	}
	delete(kvs, k)
	n.locksChanged(kvs, []string{k}, false)
	if h, ok := n.Holder("t001"); ok {
		t.Errorf("t001 without keys: holder %+v", h)
	}
	if h, _ := n.Holder("t002"); h.Member != "a" || h.Epoch != 12 {
		t.Errorf("t002: holder %+v", h)
	}
	n.locksChanged(map[string]*mvccpb.KeyValue{}, nil, true) // read again after a failed watch
	if h, ok := n.Holder("t000"); ok {
		t.Errorf("t000 after an empty read: holder %+v", h)
	}

	cost := func(targets int) float64 {
		n := New(Options{Cfg: Config{Name: "c", Prefix: "/outpost"}.WithDefaults("127.0.0.1:3")})
		kvs, keys := lockKVs(t, n, targets)
		n.locksChanged(kvs, keys, true)
		one := keys[:1]
		return testing.AllocsPerRun(20, func() { n.locksChanged(kvs, one, false) })
	}
	if few, many := cost(10), cost(1000); many > 2*few+10 {
		t.Errorf("a change of one lock allocates %.0f times with 1000 targets, %.0f with 10", many, few)
	}
}
