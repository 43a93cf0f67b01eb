// Package cli holds what the project's commands share: subcommand dispatch
// with usage, flag sets that report instead of exiting, and reading a
// command's input from a literal, a file or standard input.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Command is one subcommand. Run returns the exit code: 0 success,
// 1 failure, 2 bad usage.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int
}

// App is a program made of subcommands.
type App struct {
	Name     string // the program, as typed
	Title    string // one line saying what it is
	Commands []Command
}

// Run dispatches args[0] to its command.
func (a App) Run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		a.Usage(errOut)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range a.Commands {
		if c.Name == args[0] {
			return c.Run(ctx, args[1:], in, out, errOut)
		}
	}
	fmt.Fprintf(errOut, "%s: unknown command %q\n\n", a.Name, args[0])
	a.Usage(errOut)
	return 2
}

// Usage lists the commands.
func (a App) Usage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage: %s COMMAND [flags]\n\nCommands:\n", a.Title, a.Name)
	for _, c := range a.Commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun `%s COMMAND -h` for a command's flags.\n", a.Name)
}

// NewFlags returns a flag set for a subcommand that reports errors to
// errOut and returns them instead of exiting.
func NewFlags(prog, name string, errOut io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(prog+" "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	return fs
}

// ReadInput reads a --data value: a literal, @FILE for a file's contents,
// or - for standard input.
func ReadInput(data string, in io.Reader) ([]byte, error) {
	switch {
	case data == "-":
		return io.ReadAll(in)
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		return b, nil
	}
	return []byte(data), nil
}
