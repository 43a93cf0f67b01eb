package confval

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Labels are the operator's names for a task or a call (tier: batch,
// site/zone: north-1), which placement rules see. One rule checks them
// wherever they come from: a config file, a deploy manifest, a call's
// request on the admin API or the control plane.

// MaxLabels bounds the labels of one task or call.
const MaxLabels = 32

// labelKeyChars are the characters of a label key.
const labelKeyChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./"

// LabelProblems lists what is wrong with labels, by key in order: a key
// of 1 to 63 letters, digits, '-', '_', '.' or '/'; a value of at most 253
// bytes; at most MaxLabels labels.
func LabelProblems(labels map[string]string) []string {
	var out []string
	if len(labels) > MaxLabels {
		out = append(out, fmt.Sprintf("%d labels, at most %d", len(labels), MaxLabels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		ok := len(k) > 0 && len(k) <= 63 && strings.Trim(k, labelKeyChars) == ""
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("key %q: want 1 to 63 letters, digits, '-', '_', '.' or '/'", k))
		case len(labels[k]) > 253:
			out = append(out, fmt.Sprintf("%s: value of %d bytes, at most 253", k, len(labels[k])))
		}
	}
	return out
}

// CheckLabels is LabelProblems as one error, nil when there are none.
func CheckLabels(labels map[string]string) error {
	ps := LabelProblems(labels)
	if len(ps) == 0 {
		return nil
	}
	return fmt.Errorf("labels: %s", strings.Join(ps, "; "))
}

// Labels reports every problem of labels at key.
func (c *Checker) Labels(key string, labels map[string]string) {
	for _, p := range LabelProblems(labels) {
		c.Errorf(key, "%s", p)
	}
}

// ParseLabels reads labels written KEY=VALUE (a command line's --label,
// the admin API's label parameter; VALUE may be empty, a later KEY
// replaces an earlier one) and checks them; nil for none.
func ParseLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("label %q: want KEY=VALUE", kv)
		}
		m[k] = v
	}
	if err := CheckLabels(m); err != nil {
		return nil, err
	}
	return m, nil
}
