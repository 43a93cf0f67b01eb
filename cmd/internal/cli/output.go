package cli

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/outpost-edge/outpost/internal/printable"
)

// Output is the -o flag of a command that prints data: table (for people,
// the default), json or yaml. JSON and YAML carry the API's wire names.
type Output struct {
	Format string
	// Local: times print in the local zone (standard output is a
	// terminal); otherwise in UTC, so that logs and scripts compare.
	Local bool
}

// AddOutput adds -o/--output to cmd (and the older --json, kept as a
// hidden alias of -o json).
func AddOutput(cmd *cobra.Command) *Output {
	o := &Output{}
	cmd.Flags().StringVarP(&o.Format, "output", "o", "table", "output format: table, json or yaml")
	var asJSON bool
	cmd.Flags().BoolVar(&asJSON, "json", false, "same as -o json")
	_ = cmd.Flags().MarkHidden("json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if asJSON {
			o.Format = "json"
		}
		switch o.Format {
		case "table", "json", "yaml":
		default:
			return Usagef("-o %q: want table, json or yaml", o.Format)
		}
		o.Local = IsTerminal(c.OutOrStdout())
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
	return o
}

// Table reports whether the output is for people.
func (o *Output) Table() bool { return o.Format == "table" }

// Print writes v as JSON or YAML (with the JSON field names), or calls
// table to print it for people.
func (o *Output) Print(w io.Writer, v any, table func(io.Writer)) error {
	switch o.Format {
	case "json":
		return WriteJSON(w, v)
	case "yaml":
		return WriteYAML(w, v)
	}
	table(w)
	return nil
}

// Time formats t for a table: RFC 3339 in the local zone on a terminal,
// else in UTC; "-" for the zero time.
func (o *Output) Time(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if o.Local {
		return t.Local().Format(time.RFC3339)
	}
	return t.UTC().Format(time.RFC3339)
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteYAML writes v as YAML with its JSON field names, in their order.
func WriteYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return err
	}
	blockStyle(&n)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// blockStyle turns the flow style and quoted strings that JSON decodes to
// into plain YAML (the encoder still quotes a string that needs it).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// Bytes prints a call's input or output for people: the text itself when
// it is UTF-8 text, else base64 with a note.
func Bytes(b []byte) string {
	if printable.Bytes(b) {
		return string(b)
	}
	return fmt.Sprintf("(%d bytes, not text; base64) %s", len(b), base64.StdEncoding.EncodeToString(b))
}

// Size formats a byte count with one unit system everywhere: B, KiB, MiB,
// GiB, one decimal above a KiB.
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/unit, "KiB"
	for _, next := range []string{"MiB", "GiB"} {
		if f < unit {
			break
		}
		f, u = f/unit, next
	}
	return fmt.Sprintf("%.1f %s", f, u)
}
