package cluster

import (
	"context"
	"maps"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchPrefix keeps a copy of the keys under prefix and calls changed with
// it after the first read and after every change, until ctx ends. A watch
// that fails (etcd restarted, history compacted) starts over with a read.
func (n *Node) watchPrefix(ctx context.Context, prefix string, changed func(map[string]*mvccpb.KeyValue)) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL.Std())
		r, err := n.cli.Get(gctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		kvs := map[string]*mvccpb.KeyValue{}
		for _, kv := range r.Kvs {
			kvs[string(kv.Key)] = kv
		}
		changed(maps.Clone(kvs))
		wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for w := range n.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1)) {
			if w.Err() != nil {
				break
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(kvs, string(ev.Kv.Key))
				} else {
					kvs[string(ev.Kv.Key)] = ev.Kv
				}
			}
			changed(maps.Clone(kvs))
		}
		stop()
		sleep(ctx, 200*time.Millisecond)
	}
}
