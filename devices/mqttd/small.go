package mqttd

import "iter"

// small is a map that keeps its first entries in a slice. Most topic
// levels have one child, most filters one subscriber and most clients a
// few subscriptions, and a Go map costs a few hundred bytes even for one
// entry: with thousands of devices, each with topics of its own, that was
// most of a device's memory in the subscription tree (docs/devices.md).
type small[K comparable, V any] struct {
	list []smallEntry[K, V]
	m    map[K]V // past smallMax entries, all of them
}

type smallEntry[K comparable, V any] struct {
	k K
	v V
}

// smallMax is the most entries kept in the slice.
const smallMax = 8

func (s *small[K, V]) get(k K) (V, bool) {
	if s.m != nil {
		v, ok := s.m[k]
		return v, ok
	}
	for _, e := range s.list {
		if e.k == k {
			return e.v, true
		}
	}
	var zero V
	return zero, false
}

// set sets k to v and reports whether k is new.
func (s *small[K, V]) set(k K, v V) bool {
	if s.m != nil {
		_, had := s.m[k]
		s.m[k] = v
		return !had
	}
	for i := range s.list {
		if s.list[i].k == k {
			s.list[i].v = v
			return false
		}
	}
	if len(s.list) < smallMax {
		s.list = append(s.list, smallEntry[K, V]{k, v})
		return true
	}
	s.m = make(map[K]V, len(s.list)+1)
	for _, e := range s.list {
		s.m[e.k] = e.v
	}
	s.list = nil
	s.m[k] = v
	return true
}

// del removes k and reports whether it was there.
func (s *small[K, V]) del(k K) bool {
	if s.m != nil {
		_, had := s.m[k]
		delete(s.m, k)
		return had
	}
	for i := range s.list {
		if s.list[i].k == k {
			last := len(s.list) - 1
			s.list[i] = s.list[last]
			s.list[last] = smallEntry[K, V]{}
			s.list = s.list[:last]
			if last == 0 {
				s.list = nil
			}
			return true
		}
	}
	return false
}

func (s *small[K, V]) len() int {
	if s.m != nil {
		return len(s.m)
	}
	return len(s.list)
}

// all yields every entry, in no particular order.
func (s *small[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		if s.m != nil {
			for k, v := range s.m {
				if !yield(k, v) {
					return
				}
			}
			return
		}
		for _, e := range s.list {
			if !yield(e.k, e.v) {
				return
			}
		}
	}
}
