// Command benchpair prints benchmark pairs from `go test -bench` output: for
// each pair (a figure and its baseline, measured in the same runs) the
// median figure, the median baseline, and the min/median/max of the ratio
// figure/baseline taken run by run.
//
// The output it reads holds several runs of the same benchmarks, each begun
// by a line "benchpair-run: ID" (scripts/bench.sh runs every test binary
// COUNT times and each run measures both sides of a pair one after the
// other, so the sides are interleaved A B A B). A ratio is only taken
// between the two sides of one run.
//
// Pairs come from a file, one a line, fields separated by "|":
//
//	title | baseline benchmark | figure benchmark | unit | note
//
// Benchmark names are written without the -GOMAXPROCS suffix. A unit
// written "FIGURE,BASELINE" (round-s,raw-round-s) takes the two sides from
// two units, for a benchmark that measures both sides in the same
// iterations and reports them on one line. A baseline
// of "-" prints a figure alone, with its min/median/max over the runs (a
// property of the run, such as a batch size, rather than a comparison).
// Blank lines and lines starting with # are ignored.
//
//	go run ./scripts/benchpair -pairs scripts/bench.pairs results.txt
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("benchpair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pairsFile := fs.String("pairs", "", "file of pairs: title | baseline | figure | unit | note")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pairsFile == "" {
		fmt.Fprintln(stderr, "benchpair: -pairs is required")
		return 2
	}
	pf, err := os.ReadFile(*pairsFile)
	if err != nil {
		fmt.Fprintf(stderr, "benchpair: %v\n", err)
		return 1
	}
	pairs, err := parsePairs(string(pf))
	if err != nil {
		fmt.Fprintf(stderr, "benchpair: %s: %v\n", *pairsFile, err)
		return 1
	}
	in := stdin
	if fs.NArg() > 0 {
		var readers []io.Reader
		for _, name := range fs.Args() {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintf(stderr, "benchpair: %v\n", err)
				return 1
			}
			defer f.Close()
			readers = append(readers, f)
		}
		in = io.MultiReader(readers...)
	}
	res, err := parseResults(in)
	if err != nil {
		fmt.Fprintf(stderr, "benchpair: %v\n", err)
		return 1
	}
	for _, p := range pairs {
		if line, ok := res.row(p); ok {
			fmt.Fprintln(stdout, line)
		}
	}
	return 0
}

// pair is one line of the pairs file.
type pair struct {
	title, baseline, figure, unit, note string
}

// units returns the units of the figure and of the baseline.
func (p pair) units() (figure, baseline string) {
	if f, b, ok := strings.Cut(p.unit, ","); ok {
		return f, b
	}
	return p.unit, p.unit
}

func parsePairs(text string) ([]pair, error) {
	var out []pair
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 5 {
			return nil, fmt.Errorf("line %d: %d fields, want 5 (title | baseline | figure | unit | note)", i+1, len(f))
		}
		for j := range f {
			f[j] = strings.TrimSpace(f[j])
		}
		if f[0] == "" || f[1] == "" || f[2] == "" || f[3] == "" {
			return nil, fmt.Errorf("line %d: empty field", i+1)
		}
		out = append(out, pair{title: f[0], baseline: f[1], figure: f[2], unit: f[3], note: f[4]})
	}
	return out, nil
}

// results holds every measurement: run id -> benchmark name -> unit -> value.
type results struct {
	runs  []string // in order of appearance
	value map[string]map[string]map[string]float64
}

var procSuffix = regexp.MustCompile(`-[0-9]+$`)

func parseResults(r io.Reader) (*results, error) {
	res := &results{value: map[string]map[string]map[string]float64{}}
	run := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "benchpair-run: "); ok {
			run = strings.TrimSpace(id)
			if _, seen := res.value[run]; !seen {
				res.runs = append(res.runs, run)
				res.value[run] = map[string]map[string]float64{}
			}
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		if run == "" {
			return nil, errors.New("a benchmark line before the first benchpair-run line")
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue // a name printed before its figures, or a failure
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		units := res.value[run][name]
		if units == nil {
			units = map[string]float64{}
			res.value[run][name] = units
		}
		// f[1] is the iteration count, then value/unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: value %q: %w", f[0], f[i], err)
			}
			units[f[i+1]] = v
		}
	}
	return res, sc.Err()
}

// row formats one pair, or reports false when no run measured both sides.
func (r *results) row(p pair) (string, bool) {
	if p.baseline == "-" {
		return r.single(p)
	}
	fu, bu := p.units()
	var figs, bases, ratios []float64
	for _, run := range r.runs {
		b, okb := r.value[run][p.baseline][bu]
		f, okf := r.value[run][p.figure][fu]
		if !okb || !okf || b == 0 {
			continue
		}
		figs, bases, ratios = append(figs, f), append(bases, b), append(ratios, f/b)
	}
	if len(ratios) == 0 {
		return "", false
	}
	slices.Sort(ratios)
	return fmt.Sprintf("%-50s %12s vs %12s %-9s %6.3g/%.3g/%.3gx (n=%d) %s",
		p.title, num(median(figs)), num(median(bases)), p.unit,
		ratios[0], median(ratios), ratios[len(ratios)-1], len(ratios), p.note), true
}

// single formats a figure without a baseline.
func (r *results) single(p pair) (string, bool) {
	var figs []float64
	for _, run := range r.runs {
		if f, ok := r.value[run][p.figure][p.unit]; ok {
			figs = append(figs, f)
		}
	}
	if len(figs) == 0 {
		return "", false
	}
	slices.Sort(figs)
	return fmt.Sprintf("%-50s %12s    %12s %-9s %s/%s/%s (n=%d) %s",
		p.title, num(median(figs)), "", p.unit, num(figs[0]), num(median(figs)), num(figs[len(figs)-1]), len(figs), p.note), true
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// num prints a figure with up to four significant digits after the point
// for small values and none for large ones.
func num(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
