package tasks

import (
	"errors"
	"fmt"

	"github.com/outpost-edge/outpost/coordinator/placement"
	"github.com/outpost-edge/outpost/internal/confval"
)

// Manifest describes a deployed task's settings: the keys of a config task
// besides name and module (the file `outpost task deploy --manifest` sends).
type Manifest struct {
	ABI         string      `yaml:"abi" json:"abi"`
	Limits      Limits      `yaml:"limits" json:"limits"`
	Permissions Permissions `yaml:"permissions" json:"permissions"`
	// FreshInstance: a new instance per call (config key fresh_instance).
	FreshInstance bool `yaml:"fresh_instance" json:"fresh_instance,omitempty"`
	// Module, when no module is uploaded: an uploaded part's reference, a
	// stored blob ("sha256:HEX") or a pinned URL ("https://…#sha256=HEX").
	Module string `yaml:"module" json:"module,omitempty"`
	// Libraries and Files are Task's; a library module or a file source is
	// a reference like Module.
	Libraries []Library `yaml:"libraries" json:"libraries,omitempty"`
	Files     []File    `yaml:"files" json:"files,omitempty"`
	// Artifacts and Placement are Task's; an artifact's executable is a
	// reference like Module.
	Artifacts []Artifact       `yaml:"artifacts" json:"artifacts,omitempty"`
	Placement []placement.Rule `yaml:"placement" json:"placement,omitempty"`
	// Labels are Task's.
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
}

// ApplyDefaults fills the zero ABI and limits.
func (m *Manifest) ApplyDefaults() {
	if m.ABI == "" {
		m.ABI = Defaults.ABI
	}
	m.Limits.ApplyDefaults()
	applyArtifactDefaults(m.Artifacts)
}

// Validate reports every problem of a manifest with its defaults applied.
// Its module, library and file references name uploads, blobs or URLs, not
// local files: the daemon resolves them.
func (m Manifest) Validate(c *confval.Checker) {
	validateSettings(c, m.ABI, m.Limits, m.Permissions)
	validateDeps(c, m.Libraries, m.Files, false)
	validateArtifacts(c, m.Artifacts, false)
	placement.Validate(c.At("placement"), m.Placement)
	c.Labels("labels", m.Labels)
}

// CheckNative reports what is wrong with the manifest of task name when no
// module is uploaded with it and its module key is empty: a process-only
// task (docs/placement.md). Each error names the task and the key.
func (m Manifest) CheckNative(name string) error {
	var errs []error
	for _, p := range nativeProblems(name, m.Module, m.Libraries, m.Artifacts, m.FreshInstance) {
		errs = append(errs, fmt.Errorf("%s: %s", p.key, p.msg))
	}
	return errors.Join(errs...)
}
