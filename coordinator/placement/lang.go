package placement

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The rule language is a subset of CEL (https://github.com/google/cel-spec):
// its syntax, its types (bool, int, double, string, list, map and the
// objects call, task, node and env) and its operators, type-checked before a
// rule is used. docs/placement.md lists what it has; docs/architecture.md
// says why it is not cel-go itself (the idle memory and binary size that
// library cost).
//
// This file reads an expression into a tree; check.go type-checks the tree
// and turns it into a function of the decision's input.

// node is one element of an expression's tree.
type node struct {
	op   string // literal, ident, select, index, call, list, or an operator
	pos  int    // byte offset of the token that names the node
	val  any    // a literal's value
	name string // ident, select's field, call's function
	args []*node
}

// syntaxError is an error at a byte offset of the expression.
type syntaxError struct {
	pos int
	msg string
}

func (e *syntaxError) Error() string { return e.msg }

// position formats err as CEL does: ERROR: <input>:LINE:COLUMN: message,
// COLUMN counted from 1.
func position(expr string, pos int, msg string) string {
	line, col := 1, 1
	for _, r := range expr[:min(pos, len(expr))] {
		if r == '\n' {
			line, col = line+1, 1
			continue
		}
		col++
	}
	return fmt.Sprintf("ERROR: <input>:%d:%d: %s", line, col, msg)
}

type token struct {
	kind string // ident, int, double, string, op, eof
	text string
	val  any
	pos  int
}

// lex splits expr into tokens.
func lex(expr string) ([]token, error) {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '_' || unicode.IsLetter(rune(c)):
			j := i
			for j < len(expr) && (expr[j] == '_' || unicode.IsLetter(rune(expr[j])) || unicode.IsDigit(rune(expr[j]))) {
				j++
			}
			toks = append(toks, token{kind: "ident", text: expr[i:j], pos: i})
			i = j
		case unicode.IsDigit(rune(c)) || c == '.' && i+1 < len(expr) && unicode.IsDigit(rune(expr[i+1])):
			j, double := i, false
			for j < len(expr) && (unicode.IsDigit(rune(expr[j])) || expr[j] == '.' || expr[j] == 'e' || expr[j] == 'E' ||
				(expr[j] == '-' || expr[j] == '+') && (expr[j-1] == 'e' || expr[j-1] == 'E')) {
				double = double || expr[j] == '.' || expr[j] == 'e' || expr[j] == 'E'
				j++
			}
			t := token{kind: "int", text: expr[i:j], pos: i}
			var err error
			if double {
				t.kind = "double"
				t.val, err = strconv.ParseFloat(t.text, 64)
			} else {
				t.val, err = strconv.ParseInt(t.text, 10, 64)
			}
			if err != nil {
				return nil, &syntaxError{i, fmt.Sprintf("invalid number %s", t.text)}
			}
			toks = append(toks, t)
			i = j
		case c == '\'' || c == '"':
			s, n, err := unquote(expr[i:])
			if err != nil {
				return nil, &syntaxError{i, err.Error()}
			}
			toks = append(toks, token{kind: "string", text: expr[i : i+n], val: s, pos: i})
			i += n
		default:
			op := ""
			for _, o := range []string{"&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",", "(", ")", "[", "]"} {
				if strings.HasPrefix(expr[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, &syntaxError{i, fmt.Sprintf("syntax error: unexpected character %q", c)}
			}
			toks = append(toks, token{kind: "op", text: op, pos: i})
			i += len(op)
		}
	}
	return append(toks, token{kind: "eof", pos: len(expr)}), nil
}

// unquote reads the string literal at the start of s (single or double
// quotes, backslash escapes) and returns it and its length in s.
func unquote(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case q:
			return b.String(), i + 1, nil
		case '\\':
			if i+1 == len(s) {
				break
			}
			i++
			switch e := s[i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case '\\', '\'', '"':
				b.WriteByte(e)
			default:
				return "", 0, fmt.Errorf("invalid escape \\%c", e)
			}
		case '\n':
			return "", 0, fmt.Errorf("string literal not terminated")
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("string literal not terminated")
}

// parser reads tokens by precedence, lowest first: ?:, ||, &&, relations
// (== != < <= > >= in), + -, * / %, unary ! -, member access and calls.
type parser struct {
	toks  []token
	i     int
	depth int // nesting of subexpressions and unary operators
}

// maxDepth bounds the nesting of an expression, so that a hostile one
// cannot exhaust the stack of the daemon that reads it.
const maxDepth = 100

// nest enters one level of nesting; the caller defers p.depth--.
func (p *parser) nest() error {
	p.depth++
	if p.depth > maxDepth {
		return &syntaxError{p.peek().pos, fmt.Sprintf("expression nested more than %d deep", maxDepth)}
	}
	return nil
}

// parse reads expr into a tree.
func parse(expr string) (*node, error) {
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.conditional()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != "eof" {
		return nil, p.unexpected(t)
	}
	return n, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != "eof" {
		p.i++
	}
	return t
}

// accept consumes the operator op if it is next.
func (p *parser) accept(op string) (token, bool) {
	if t := p.peek(); t.kind == "op" && t.text == op {
		return p.next(), true
	}
	return token{}, false
}

func (p *parser) expect(op string) error {
	if _, ok := p.accept(op); !ok {
		return p.unexpected(p.peek())
	}
	return nil
}

func (p *parser) unexpected(t token) error {
	if t.kind == "eof" {
		return &syntaxError{t.pos, "syntax error: unexpected end of expression"}
	}
	return &syntaxError{t.pos, fmt.Sprintf("syntax error: unexpected %s", t.text)}
}

func (p *parser) conditional() (*node, error) {
	defer func() { p.depth-- }()
	if err := p.nest(); err != nil {
		return nil, err
	}
	cond, err := p.binary(0)
	if err != nil {
		return nil, err
	}
	q, ok := p.accept("?")
	if !ok {
		return cond, nil
	}
	then, err := p.conditional()
	if err != nil {
		return nil, err
	}
	if err := p.expect(":"); err != nil {
		return nil, err
	}
	els, err := p.conditional()
	if err != nil {
		return nil, err
	}
	return &node{op: "?:", pos: q.pos, args: []*node{cond, then, els}}, nil
}

// levels are the binary operators by precedence, lowest first.
var levels = [][]string{{"||"}, {"&&"}, {"==", "!=", "<", "<=", ">", ">=", "in"}, {"+", "-"}, {"*", "/", "%"}}

func (p *parser) binary(level int) (*node, error) {
	if level == len(levels) {
		return p.unary()
	}
	left, err := p.binary(level + 1)
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		isOp := (t.kind == "op" || t.kind == "ident" && t.text == "in") && contains(levels[level], t.text)
		if !isOp {
			return left, nil
		}
		p.next()
		right, err := p.binary(level + 1)
		if err != nil {
			return nil, err
		}
		left = &node{op: t.text, pos: t.pos, args: []*node{left, right}}
	}
}

func contains(ops []string, op string) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

func (p *parser) unary() (*node, error) {
	defer func() { p.depth-- }()
	if err := p.nest(); err != nil {
		return nil, err
	}
	for _, op := range []string{"!", "-"} {
		if t, ok := p.accept(op); ok {
			arg, err := p.unary()
			if err != nil {
				return nil, err
			}
			if op == "-" && arg.op == "literal" { // a negative literal
				switch v := arg.val.(type) {
				case int64:
					return &node{op: "literal", pos: t.pos, val: -v}, nil
				case float64:
					return &node{op: "literal", pos: t.pos, val: -v}, nil
				}
			}
			return &node{op: "unary" + op, pos: t.pos, args: []*node{arg}}, nil
		}
	}
	return p.member()
}

func (p *parser) member() (*node, error) {
	n, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		if dot, ok := p.accept("."); ok {
			name := p.next()
			if name.kind != "ident" {
				return nil, p.unexpected(name)
			}
			if _, ok := p.accept("("); ok { // a method: its receiver is the first argument
				args, err := p.arguments(")")
				if err != nil {
					return nil, err
				}
				n = &node{op: "call", pos: dot.pos, name: name.text, args: append([]*node{n}, args...)}
				continue
			}
			n = &node{op: "select", pos: dot.pos, name: name.text, args: []*node{n}}
			continue
		}
		if br, ok := p.accept("["); ok {
			idx, err := p.conditional()
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			n = &node{op: "index", pos: br.pos, args: []*node{n, idx}}
			continue
		}
		return n, nil
	}
}

// arguments reads expressions separated by commas up to the closing op.
func (p *parser) arguments(closing string) ([]*node, error) {
	var args []*node
	if _, ok := p.accept(closing); ok {
		return nil, nil
	}
	for {
		a, err := p.conditional()
		if err != nil {
			return nil, err
		}
		args = append(args, a)
		if _, ok := p.accept(","); ok {
			continue
		}
		return args, p.expect(closing)
	}
}

func (p *parser) primary() (*node, error) {
	t := p.next()
	switch t.kind {
	case "int", "double", "string":
		return &node{op: "literal", pos: t.pos, val: t.val}, nil
	case "ident":
		switch t.text {
		case "true", "false":
			return &node{op: "literal", pos: t.pos, val: t.text == "true"}, nil
		}
		if _, ok := p.accept("("); ok {
			args, err := p.arguments(")")
			if err != nil {
				return nil, err
			}
			return &node{op: "call", pos: t.pos, name: t.text, args: args}, nil
		}
		return &node{op: "ident", pos: t.pos, name: t.text}, nil
	case "op":
		switch t.text {
		case "(":
			n, err := p.conditional()
			if err != nil {
				return nil, err
			}
			return n, p.expect(")")
		case "[":
			elems, err := p.arguments("]")
			if err != nil {
				return nil, err
			}
			return &node{op: "list", pos: t.pos, args: elems}, nil
		}
	}
	return nil, p.unexpected(t)
}
