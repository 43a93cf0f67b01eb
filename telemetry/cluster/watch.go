package cluster

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchPrefix keeps a copy of the keys under prefix and calls changed with
// it and the keys that changed (every key after a read: reset) after the
// first read and after every batch of changes, until ctx ends. Watch
// responses that arrived while changed ran are taken as one batch, so a
// burst of changes (every lock of an instance at once) costs one call, not
// one each. changed must not keep kvs. A watch that fails (etcd restarted,
// history compacted) starts over with a read.
func (n *Node) watchPrefix(ctx context.Context, prefix string, changed func(kvs map[string]*mvccpb.KeyValue, keys []string, reset bool)) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL.Std())
		r, err := n.cli.Get(gctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		kvs := map[string]*mvccpb.KeyValue{}
		keys := make([]string, 0, len(r.Kvs))
		for _, kv := range r.Kvs {
			kvs[string(kv.Key)] = kv
			keys = append(keys, string(kv.Key))
		}
		changed(kvs, keys, true)
		wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := n.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1))
		for w := range wch {
			keys = keys[:0]
			ok := apply(kvs, &keys, w)
		more:
			for ok {
				select {
				case w, open := <-wch:
					ok = open && apply(kvs, &keys, w)
				default:
					break more
				}
			}
			if len(keys) > 0 {
				changed(kvs, keys, false)
			}
			if !ok {
				break
			}
		}
		stop()
		sleep(ctx, 200*time.Millisecond)
	}
}

// apply applies a watch response to kvs and adds the keys it changed to
// keys; it returns false when the watch failed.
func apply(kvs map[string]*mvccpb.KeyValue, keys *[]string, w clientv3.WatchResponse) bool {
	if w.Err() != nil {
		return false
	}
	for _, ev := range w.Events {
		k := string(ev.Kv.Key)
		if ev.Type == clientv3.EventTypeDelete {
			delete(kvs, k)
		} else {
			kvs[k] = ev.Kv
		}
		*keys = append(*keys, k)
	}
	return true
}
