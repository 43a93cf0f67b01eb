package devices

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
)

// Mosquitto's password file hash, as mosquitto_passwd 2.x writes it by
// default (sha512-pbkdf2): $7$ITERATIONS$BASE64(SALT)$BASE64(HASH), the
// hash PBKDF2-HMAC-SHA512 of the password, 64 bytes, base64 with padding.
// The registry keeps it beside the bcrypt hash because the secret itself
// is not kept: a device's secret is 24 random bytes, so the iteration
// count (mosquitto_passwd's own, which Mosquitto pays at every login) is
// not what protects it.
const (
	mosquittoIterations = 101
	mosquittoSaltBytes  = 12
	mosquittoHashBytes  = sha512.Size
)

// mosquittoHash returns the Mosquitto password file hash of secret with
// salt.
func mosquittoHash(secret string, salt []byte) (string, error) {
	key, err := pbkdf2.Key(sha512.New, secret, salt, mosquittoIterations, mosquittoHashBytes)
	if err != nil {
		return "", fmt.Errorf("mosquitto hash: %w", err)
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("$7$%d$%s$%s", mosquittoIterations, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// newMosquittoHash hashes secret with a fresh salt.
func newMosquittoHash(secret string) (string, error) {
	salt := make([]byte, mosquittoSaltBytes)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	return mosquittoHash(secret, salt)
}

// MosquittoFiles are the registry's devices and access rules as Mosquitto
// 2.x files: a password file (password_file) and an ACL file (acl_file).
// Disabled devices are left out of both; devices registered before the
// registry kept a Mosquitto hash are listed in NoHash and left out too
// (remove and add them again for a new secret).
type MosquittoFiles struct {
	PasswordFile string   `json:"password_file"`
	ACLFile      string   `json:"acl_file"`
	Devices      []string `json:"devices"`  // exported
	Disabled     []string `json:"disabled"` // left out: disabled
	NoHash       []string `json:"no_hash"`  // left out: no Mosquitto hash
}

// ExportMosquitto writes the registry's enabled devices as Mosquitto
// files enforcing the rules the embedded broker enforces: every device its
// own namespace and shadow topics (pattern lines, %u the username, which
// is the device id), and the rules of its groups (a user block each, {id}
// substituted). Publish grants become "write", subscribe grants "read"
// (subscribe and receive). Anonymous clients get nothing: Mosquitto cannot
// tell loopback clients apart, so allow_anonymous must stay false.
func (r *Registry) ExportMosquitto(groups map[string][]Rule) MosquittoFiles {
	out := MosquittoFiles{Devices: []string{}, Disabled: []string{}, NoHash: []string{}}
	var pw, acl strings.Builder
	acl.WriteString("# Written by outpost device export-mosquitto: the rules of Outpost's embedded broker.\n")
	acl.WriteString("# Every device: its own namespace and shadow topics (%u is the username, the device id).\n")
	for _, rule := range ownRules {
		writeACL(&acl, "pattern", rule, "%u")
	}
	r.mu.Lock()
	recs := make([]record, 0, len(r.devices))
	for _, e := range r.devices {
		recs = append(recs, e.rec)
	}
	r.mu.Unlock()
	slices.SortFunc(recs, func(a, b record) int { return strings.Compare(a.ID, b.ID) })
	for _, rec := range recs {
		switch {
		case rec.Disabled:
			out.Disabled = append(out.Disabled, rec.ID)
			continue
		case rec.Mosquitto == "":
			out.NoHash = append(out.NoHash, rec.ID)
			continue
		}
		out.Devices = append(out.Devices, rec.ID)
		fmt.Fprintf(&pw, "%s:%s\n", rec.ID, rec.Mosquitto)
		fmt.Fprintf(&acl, "\nuser %s\n", rec.ID)
		for _, g := range rec.Groups {
			for _, rule := range groups[g] {
				writeACL(&acl, "topic", rule, rec.ID)
			}
		}
	}
	out.PasswordFile, out.ACLFile = pw.String(), acl.String()
	return out
}

// writeACL writes the lines of one rule, {id} replaced by id.
func writeACL(b *strings.Builder, kind string, rule Rule, id string) {
	for _, l := range []struct {
		access  string
		filters []string
	}{{"write", rule.Publish}, {"read", rule.Subscribe}} {
		for _, f := range l.filters {
			fmt.Fprintf(b, "%s %s %s\n", kind, l.access, strings.ReplaceAll(f, "{id}", id))
		}
	}
}
