package runtime

// TaskState is what a task of the active set runs with beyond TaskInfo:
// its permissions as loaded and its instance pool.
type TaskState struct {
	Permissions Permissions
	// Warm is the number of idle instances in the pool (0 for a task that
	// takes a fresh instance per call); InUse the calls running now.
	Warm, InUse int
}

// Inspect returns the state of a task of the active set.
func (e *Engine) Inspect(name string) (TaskState, bool) {
	t := e.active.Load().tasks[name]
	if t == nil {
		return TaskState{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return TaskState{Permissions: t.grants, Warm: len(t.idle), InUse: t.inflight}, true
}
