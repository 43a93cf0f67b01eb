//go:build wasip1

// Command wc-command is an Outpost command task: a plain WASI program with no
// Outpost-specific code at all. It reads its input from stdin and writes
// "lines words bytes\n" to stdout, like wc. Any language that targets WASI
// (wasm32-wasi / wasip1) can write a command task this way.
//
// Build (scripts/build-examples.sh does this):
//
//	GOOS=wasip1 GOARCH=wasm go build -o wc-command.wasm ./examples/tasks/go/wc-command
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"unicode"
)

func main() {
	var lines, words, bytes int
	inWord := false
	r := bufio.NewReader(os.Stdin)
	for {
		c, size, err := r.ReadRune()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "read stdin:", err)
			os.Exit(1)
		}
		bytes += size
		if c == '\n' {
			lines++
		}
		if unicode.IsSpace(c) {
			inWord = false
		} else if !inWord {
			inWord = true
			words++
		}
	}
	fmt.Printf("%d %d %d\n", lines, words, bytes)
}
