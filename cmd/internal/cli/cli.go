// Package cli holds what the project's two command lines (outpost and
// outpost-cloud) share on top of cobra: exit codes for usage errors, `help`
// as an argument, output formats (-o table|json|yaml), reading a command's
// input from a flag, a file or standard input, version information from the
// build, and progress that is drawn only where a person watches.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Exit codes of both commands.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a command line that cannot be run as given: the command
// prints it with a pointer to --help and exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error {
	return &UsageError{Err: fmt.Errorf(format, a...)}
}

// ErrSilent is returned by a command that has already said what went wrong
// (on standard error) and only sets the exit code to ExitFailure.
var ErrSilent = errors.New("failed")

// IO is what a command reads and writes.
type IO struct {
	In          io.Reader
	Out, ErrOut io.Writer
}

// IsTerminal reports whether v is a terminal (an *os.File on one).
func IsTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Execute runs root with args and returns the exit code: usage errors
// (unknown commands and flags, wrong arguments) exit with ExitUsage after
// saying what to run for help; other errors with ExitFailure.
func Execute(ctx context.Context, root *cobra.Command, args []string, stdio IO) int {
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.ErrOut)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	prepare(root)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, errHelpShown) {
		return ExitOK
	}
	if errors.Is(err, ErrSilent) {
		return ExitFailure
	}
	if cmd == nil {
		cmd = root
	}
	var ue *UsageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(stdio.ErrOut, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
		return ExitUsage
	}
	fmt.Fprintf(stdio.ErrOut, "%s: %v\n", cmd.CommandPath(), err)
	return ExitFailure
}

// isCobraUsage recognizes the usage errors cobra makes itself (it has no
// error types for them).
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most", "if any flags in the group", "required flag(s)", "at least one of the flags"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// prepare gives every command of the tree the same behaviour: `CMD help`
// prints CMD's help instead of acting (after `--`, "help" is an argument
// like any other); argument errors are usage errors.
func prepare(c *cobra.Command) {
	for _, sub := range c.Commands() {
		prepare(sub)
	}
	if c.Args == nil {
		return
	}
	args := c.Args
	// Args are checked before required flags and before the command runs.
	c.Args = func(cmd *cobra.Command, a []string) error {
		if isHelpArg(cmd, a) {
			if err := cmd.Help(); err != nil {
				return err
			}
			return errHelpShown
		}
		if err := args(cmd, a); err != nil {
			return &UsageError{Err: err}
		}
		return nil
	}
}

// errHelpShown ends a command whose help was asked for with `help`.
var errHelpShown = errors.New("help shown")

func isHelpArg(cmd *cobra.Command, a []string) bool {
	return len(a) > 0 && a[0] == "help" && cmd.ArgsLenAtDash() != 0
}

// ExactArgs is cobra.ExactArgs with a message that names the arguments
// the usage line shows and, when given, a hint for what to do instead.
func ExactArgs(n int, hint string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		msg := fmt.Sprintf("want %d argument(s) (%s), got %d", n, cmd.Use, len(args))
		if len(args) > n {
			msg += fmt.Sprintf(": unexpected %q", args[n])
		}
		if hint != "" {
			msg += "; " + hint
		}
		return fmt.Errorf("%s", msg)
	}
}

// RangeArgs is ExactArgs for a command that takes between lo and hi arguments.
func RangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= lo && len(args) <= hi {
			return nil
		}
		return fmt.Errorf("want %d to %d arguments (%s), got %d", lo, hi, cmd.Use, len(args))
	}
}

// NoArgs refuses positional arguments, naming the first one.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (%s takes none)", args[0], cmd.CommandPath())
	}
	return nil
}

// ReadInput returns a command's input: the --data value (a literal, @FILE
// for a file's contents, or - for standard input) when it was given;
// otherwise standard input when it is not a terminal (a pipe or a file);
// otherwise nothing.
func ReadInput(data string, given bool, in io.Reader) ([]byte, error) {
	switch {
	case !given:
		if in == nil || IsTerminal(in) {
			return nil, nil
		}
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return b, nil
	case data == "-":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return b, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		return b, nil
	}
	return []byte(data), nil
}

// DataHelp is the help text of every --data flag.
const DataHelp = "input: a literal, @FILE to read a file, or - for standard input (default: standard input when it is a pipe or a file, else empty)"

// Group makes cmd a command that only holds subcommands: alone it prints
// its help; an unknown subcommand is a usage error with suggestions.
func Group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		c.SuggestionsMinimumDistance = 2
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s", msg)
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}
