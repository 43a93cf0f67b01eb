package configs

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/coordinator/routes"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/internal/confval"
)

// builtinLists are the tasks and routes of the built-in config: the demo
// echo task and its route.
var builtinLists = sync.OnceValue(func() (b struct {
	Tasks  []tasks.Task  `yaml:"tasks"`
	Routes []routes.Rule `yaml:"routes"`
}) {
	if err := yaml.Unmarshal(Default, &b); err != nil {
		panic(fmt.Sprintf("configs/outpost.yaml: %v", err)) // embedded and tested: cannot happen
	}
	return b
})

// keepBuiltins applies the rule relating a file's tasks and routes to the
// built-in ones (docs/config.md "Tasks and routes"): a file that has
// neither a tasks nor a routes key keeps the built-in tasks and routes; a
// file that has either key replaces both lists with its own, and a
// warning names each built-in task and route the file leaves out.
func (c *Config) keepBuiltins(ch *confval.Checker) {
	setTasks, setRoutes := ch.Set("tasks"), ch.Set("routes")
	b := builtinLists()
	if !setTasks && !setRoutes {
		c.Tasks, c.Routes = slices.Clone(b.Tasks), slices.Clone(b.Routes)
		return
	}
	var gone []string
	for _, t := range b.Tasks {
		if !c.hasTask(t.Name) {
			gone = append(gone, "task "+t.Name)
		}
	}
	for _, r := range b.Routes {
		if !slices.ContainsFunc(c.Routes, r.Equal) {
			gone = append(gone, fmt.Sprintf("route %s → %s", r.Topic, r.Task))
		}
	}
	if len(gone) == 0 {
		return
	}
	key := "tasks"
	if !setTasks {
		key = "routes"
	}
	ch.Warnf(key, "this file's tasks and routes replace the built-in ones, so %s no longer run (list them here to keep them)", strings.Join(gone, " and "))
}
