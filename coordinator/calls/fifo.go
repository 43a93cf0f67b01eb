package calls

// fifo is a slice-backed queue that reuses its storage.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) {
	if q.head > 0 && len(q.items) == cap(q.items) && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, v)
}

func (q *fifo[T]) pop() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return v, true
}

func (q *fifo[T]) peek() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	return q.items[q.head], true
}

// popMin takes the first item with the lowest key; the items before it
// keep their order.
func (q *fifo[T]) popMin(key func(T) int) (T, bool) {
	items := q.items[q.head:]
	best := 0
	for i := 1; i < len(items); i++ {
		if key(items[i]) < key(items[best]) {
			best = i
		}
	}
	if best > 0 {
		v := items[best]
		copy(items[1:best+1], items[:best])
		items[0] = v
	}
	return q.pop()
}
