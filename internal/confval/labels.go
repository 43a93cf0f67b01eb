package confval

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Labels are the operator's names for a task, a call or a node (tier:
// batch, site/zone: north-1), which placement rules and label selectors
// see. One rule checks a label wherever it is written: a config file, a
// deploy manifest, a call's request on the admin API or the control plane,
// a node's labels on the control plane (CheckLabel). What only names a
// label to read it (a selector, a listing's filter, a key to remove) is
// checked by CheckLabelKeyRef, which also takes keys written under an
// earlier, longer limit, so labels stored then can still be found.

// Bounds of labels: a key of 1 to MaxLabelKey of labelKeyChars, a value of
// at most MaxLabelValue bytes, at most MaxLabels labels on one task or
// call.
const (
	MaxLabels     = 32
	MaxLabelKey   = 63
	MaxLabelValue = 253
)

// labelKeyChars are the characters of a label key.
const labelKeyChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./"

// keyRule says what a key must be, for errors.
var keyRule = fmt.Sprintf("want 1 to %d letters, digits, '-', '_', '.' or '/'", MaxLabelKey)

// CheckLabel says what is wrong with the label k=v (nil: nothing): a key
// of 1 to MaxLabelKey letters, digits, '-', '_', '.' or '/'; a value of at
// most MaxLabelValue bytes. The error names the key.
func CheckLabel(k, v string) error {
	switch {
	case len(k) == 0 || len(k) > MaxLabelKey || strings.Trim(k, labelKeyChars) != "":
		return fmt.Errorf("key %q: %s", k, keyRule)
	case len(v) > MaxLabelValue:
		return fmt.Errorf("%s: value of %d bytes, at most %d", k, len(v), MaxLabelValue)
	}
	return nil
}

// CheckLabelKeyRef says what is wrong with k as the key a reader names (a
// selector's, a listing's filter, a key to remove): letters, digits, '-',
// '_', '.' or '/', of any length, so a key stored under an earlier, longer
// limit (node labels once took keys of up to 128 characters) is still
// named.
func CheckLabelKeyRef(k string) error {
	if len(k) == 0 || strings.Trim(k, labelKeyChars) != "" {
		return fmt.Errorf("key %q: want letters, digits, '-', '_', '.' or '/'", k)
	}
	return nil
}

// LabelProblems lists what is wrong with the labels of a task or call, by
// key in order: each label by CheckLabel; at most MaxLabels labels.
func LabelProblems(labels map[string]string) []string {
	var out []string
	if len(labels) > MaxLabels {
		out = append(out, fmt.Sprintf("%d labels, at most %d", len(labels), MaxLabels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := CheckLabel(k, labels[k]); err != nil {
			out = append(out, err.Error())
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
