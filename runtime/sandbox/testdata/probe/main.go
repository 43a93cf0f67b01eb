// Command probe is a native task for the sandbox tests: its input names
// what it tries (echo by default).
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	cmd, arg, _ := strings.Cut(string(in), " ")
	switch cmd {
	case "dial": // connect to arg (host:port)
		conn, err := net.DialTimeout("tcp", arg, 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(3)
		}
		conn.Close()
		fmt.Print("connected")
	case "read": // read the file arg
		b, err := os.ReadFile(arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(3)
		}
		os.Stdout.Write(b)
	case "alloc": // touch 256 MiB
		b := bytes.Repeat([]byte{1}, 256<<20)
		fmt.Print(len(b))
	case "sleep":
		time.Sleep(time.Hour)
	case "flood": // more output than any test allows
		os.Stdout.Write(bytes.Repeat([]byte("x"), 1<<20))
	default:
		fmt.Printf("echo:%s", in)
	}
}
