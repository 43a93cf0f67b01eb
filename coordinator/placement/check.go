package placement

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// typ is a type of the rule language.
type typ struct {
	kind string // bool, int, double, string, list, map or object
	elem *typ   // a list's elements, a map's values (keys are strings)
	obj  reflect.Type
}

var (
	boolT   = &typ{kind: "bool"}
	intT    = &typ{kind: "int"}
	doubleT = &typ{kind: "double"}
	stringT = &typ{kind: "string"}
)

func (t *typ) String() string {
	switch t.kind {
	case "list":
		return "list(" + t.elem.String() + ")"
	case "map":
		return "map(string, " + t.elem.String() + ")"
	case "object":
		return "placement." + t.obj.Name()
	}
	return t.kind
}

func (t *typ) same(u *typ) bool {
	if t.kind != u.kind {
		return false
	}
	switch t.kind {
	case "list", "map":
		return t.elem.same(u.elem)
	case "object":
		return t.obj == u.obj
	}
	return true
}

func (t *typ) numeric() bool { return t == intT || t == doubleT }

// typeOf is the language's type of a Go type of the input.
func typeOf(rt reflect.Type) *typ {
	switch rt.Kind() {
	case reflect.Bool:
		return boolT
	case reflect.Int64:
		return intT
	case reflect.Float64:
		return doubleT
	case reflect.String:
		return stringT
	case reflect.Slice:
		return &typ{kind: "list", elem: typeOf(rt.Elem())}
	case reflect.Map:
		return &typ{kind: "map", elem: typeOf(rt.Elem())}
	case reflect.Struct:
		return &typ{kind: "object", obj: rt}
	}
	panic("placement: no rule type for " + rt.String())
}

// value is the language's value of a Go value of the input: lists become
// []any; maps and objects stay Go values, read by reflection.
func value(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Bool:
		return v.Bool()
	case reflect.Int64:
		return v.Int()
	case reflect.Float64:
		return v.Float()
	case reflect.String:
		return v.String()
	case reflect.Slice:
		l := make([]any, v.Len())
		for i := range l {
			l[i] = value(v.Index(i))
		}
		return l
	}
	return v.Interface()
}

// field returns the index of the field of object type rt named name by its
// cel struct tag.
func field(rt reflect.Type, name string) (int, bool) {
	for i := range rt.NumField() {
		if rt.Field(i).Tag.Get("cel") == name {
			return i, true
		}
	}
	return 0, false
}

// variables are the rules' variables and how each is read from the input.
var variables = map[string]struct {
	t   *typ
	get func(*Input) any
}{
	"call": {typeOf(reflect.TypeFor[Call]()), func(in *Input) any { return in.Call }},
	"task": {typeOf(reflect.TypeFor[Task]()), func(in *Input) any { return in.Task }},
	"node": {typeOf(reflect.TypeFor[Node]()), func(in *Input) any { return in.Node }},
	"envs": {typeOf(reflect.TypeFor[map[string]Env]()), func(in *Input) any { return in.Envs }},
}

// evalFn evaluates a checked expression against a decision's input.
type evalFn func(in *Input) (any, error)

// program is a checked rule condition.
type program struct{ eval evalFn }

// maxExprLen bounds a condition's length (its tree's size, and so the
// work of checking and evaluating it).
const maxExprLen = 4096

// compile type-checks expr as a rule's condition.
func compile(expr string) (*program, error) {
	if len(expr) > maxExprLen {
		return nil, fmt.Errorf("is %d bytes long, at most %d", len(expr), maxExprLen)
	}
	tree, err := parse(expr)
	if err == nil {
		var t *typ
		var f evalFn
		if t, f, err = check(tree); err == nil {
			if t != boolT {
				return nil, fmt.Errorf("is of type %s, want bool", t)
			}
			return &program{eval: f}, nil
		}
	}
	if se, ok := errors.AsType[*syntaxError](err); ok {
		return nil, errors.New(position(expr, se.pos, se.msg))
	}
	return nil, err
}

// matches evaluates the condition.
func (p *program) matches(in *Input) (bool, error) {
	v, err := p.eval(in)
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

func overload(n *node, name string, args ...*typ) error {
	ts := make([]string, len(args))
	for i, a := range args {
		ts[i] = a.String()
	}
	return &syntaxError{n.pos, fmt.Sprintf("found no matching overload for '%s' applied to '(%s)'", name, strings.Join(ts, ", "))}
}

// check type-checks n and returns its type and the function that
// evaluates it.
func check(n *node) (*typ, evalFn, error) {
	switch n.op {
	case "literal":
		v := n.val
		return typeOf(reflect.TypeOf(v)), func(*Input) (any, error) { return v, nil }, nil
	case "ident":
		vr, ok := variables[n.name]
		if !ok {
			return nil, nil, &syntaxError{n.pos, fmt.Sprintf("undeclared reference to '%s'", n.name)}
		}
		return vr.t, func(in *Input) (any, error) { return vr.get(in), nil }, nil
	case "list":
		return checkList(n)
	case "select":
		return checkSelect(n)
	case "index":
		return checkIndex(n)
	case "call":
		return checkCall(n)
	}
	ts, fs, err := checkArgs(n.args)
	if err != nil {
		return nil, nil, err
	}
	switch n.op {
	case "unary!":
		if ts[0] != boolT {
			return nil, nil, overload(n, "!_", ts...)
		}
		return boolT, func(in *Input) (any, error) {
			v, err := fs[0](in)
			if err != nil {
				return nil, err
			}
			return !v.(bool), nil
		}, nil
	case "unary-":
		if !ts[0].numeric() {
			return nil, nil, overload(n, "-_", ts...)
		}
		return ts[0], func(in *Input) (any, error) {
			v, err := fs[0](in)
			if err != nil {
				return nil, err
			}
			if i, ok := v.(int64); ok {
				return -i, nil
			}
			return -v.(float64), nil
		}, nil
	case "&&", "||":
		if ts[0] != boolT || ts[1] != boolT {
			return nil, nil, overload(n, "_"+n.op+"_", ts...)
		}
		return boolT, logical(n.op == "||", fs[0], fs[1]), nil
	case "?:":
		if ts[0] != boolT || !ts[1].same(ts[2]) {
			return nil, nil, overload(n, "_?_:_", ts...)
		}
		return ts[1], func(in *Input) (any, error) {
			c, err := fs[0](in)
			if err != nil {
				return nil, err
			}
			if c.(bool) {
				return fs[1](in)
			}
			return fs[2](in)
		}, nil
	case "in":
		return checkIn(n, ts, fs)
	case "==", "!=", "<", "<=", ">", ">=":
		return checkCompare(n, ts, fs)
	}
	return checkArith(n, ts, fs)
}

func checkArgs(args []*node) ([]*typ, []evalFn, error) {
	ts, fs := make([]*typ, len(args)), make([]evalFn, len(args))
	for i, a := range args {
		var err error
		if ts[i], fs[i], err = check(a); err != nil {
			return nil, nil, err
		}
	}
	return ts, fs, nil
}

// both evaluates two operands.
func both(in *Input, a, b evalFn) (any, any, error) {
	x, err := a(in)
	if err != nil {
		return nil, nil, err
	}
	y, err := b(in)
	return x, y, err
}

// logical is && (or false) and || (or true) as CEL has them: an operand
// that decides the answer wins over an error in the other.
func logical(or bool, a, b evalFn) evalFn {
	return func(in *Input) (any, error) {
		x, errA := a(in)
		if errA == nil && x.(bool) == or {
			return or, nil
		}
		y, errB := b(in)
		if errB == nil && y.(bool) == or {
			return or, nil
		}
		if errA != nil {
			return nil, errA
		}
		if errB != nil {
			return nil, errB
		}
		return !or, nil
	}
}

func checkList(n *node) (*typ, evalFn, error) {
	ts, fs, err := checkArgs(n.args)
	if err != nil {
		return nil, nil, err
	}
	if len(ts) == 0 {
		return nil, nil, &syntaxError{n.pos, "an empty list has no type: compare with size() instead"}
	}
	for _, t := range ts[1:] {
		if !t.same(ts[0]) {
			return nil, nil, &syntaxError{n.pos, fmt.Sprintf("list elements of types %s and %s", ts[0], t)}
		}
	}
	return &typ{kind: "list", elem: ts[0]}, func(in *Input) (any, error) {
		l := make([]any, len(fs))
		for i, f := range fs {
			v, err := f(in)
			if err != nil {
				return nil, err
			}
			l[i] = v
		}
		return l, nil
	}, nil
}

func checkSelect(n *node) (*typ, evalFn, error) {
	t, f, err := check(n.args[0])
	if err != nil {
		return nil, nil, err
	}
	switch t.kind {
	case "object":
		i, ok := field(t.obj, n.name)
		if !ok {
			return nil, nil, &syntaxError{n.pos, fmt.Sprintf("undefined field '%s'", n.name)}
		}
		return typeOf(t.obj.Field(i).Type), func(in *Input) (any, error) {
			v, err := f(in)
			if err != nil {
				return nil, err
			}
			return value(reflect.ValueOf(v).Field(i)), nil
		}, nil
	case "map": // m.key is m['key']
		key := n.name
		return t.elem, func(in *Input) (any, error) {
			v, err := f(in)
			if err != nil {
				return nil, err
			}
			return mapIndex(v, key)
		}, nil
	}
	return nil, nil, &syntaxError{n.pos, fmt.Sprintf("type '%s' has no field '%s'", t, n.name)}
}

func mapIndex(m any, key string) (any, error) {
	v := reflect.ValueOf(m).MapIndex(reflect.ValueOf(key))
	if !v.IsValid() {
		return nil, fmt.Errorf("no such key: %s", key)
	}
	return value(v), nil
}

func checkIndex(n *node) (*typ, evalFn, error) {
	ts, fs, err := checkArgs(n.args)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case ts[0].kind == "map" && ts[1] == stringT:
		return ts[0].elem, func(in *Input) (any, error) {
			m, k, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			return mapIndex(m, k.(string))
		}, nil
	case ts[0].kind == "list" && ts[1] == intT:
		return ts[0].elem, func(in *Input) (any, error) {
			l, i, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			if i := i.(int64); i >= 0 && i < int64(len(l.([]any))) {
				return l.([]any)[i], nil
			}
			return nil, fmt.Errorf("index out of range: %d", i)
		}, nil
	}
	return nil, nil, overload(n, "_[_]", ts...)
}

func checkIn(n *node, ts []*typ, fs []evalFn) (*typ, evalFn, error) {
	switch {
	case ts[1].kind == "list" && (ts[0].same(ts[1].elem) || ts[0].numeric() && ts[1].elem.numeric()):
		return boolT, func(in *Input) (any, error) {
			x, l, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			for _, e := range l.([]any) {
				if equal(x, e) {
					return true, nil
				}
			}
			return false, nil
		}, nil
	case ts[1].kind == "map" && ts[0] == stringT:
		return boolT, func(in *Input) (any, error) {
			k, m, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			return reflect.ValueOf(m).MapIndex(reflect.ValueOf(k)).IsValid(), nil
		}, nil
	}
	return nil, nil, overload(n, "@in", ts...)
}

func checkCompare(n *node, ts []*typ, fs []evalFn) (*typ, evalFn, error) {
	op := n.op
	numbers := ts[0].numeric() && ts[1].numeric()
	switch {
	case (op == "==" || op == "!=") && (numbers || ts[0].same(ts[1])):
		return boolT, func(in *Input) (any, error) {
			x, y, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			return equal(x, y) == (op == "=="), nil
		}, nil
	case op != "==" && op != "!=" && (numbers || ts[0] == stringT && ts[1] == stringT):
		return boolT, func(in *Input) (any, error) {
			x, y, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			c := order(x, y)
			switch op {
			case "<":
				return c < 0, nil
			case "<=":
				return c <= 0, nil
			case ">":
				return c > 0, nil
			}
			return c >= 0, nil
		}, nil
	}
	return nil, nil, overload(n, "_"+op+"_", ts...)
}

// number returns a numeric value as a float64.
func number(v any) (float64, bool) {
	switch v := v.(type) {
	case int64:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

func equal(x, y any) bool {
	if a, ok := number(x); ok {
		b, ok := number(y)
		return ok && a == b
	}
	if l, ok := x.([]any); ok {
		m := y.([]any)
		if len(l) != len(m) {
			return false
		}
		for i := range l {
			if !equal(l[i], m[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(x, y) // bool, string, and objects and maps field by field
}

// order compares two numbers or two strings.
func order(x, y any) int {
	if a, ok := x.(string); ok {
		return strings.Compare(a, y.(string))
	}
	if a, ok := x.(int64); ok {
		if b, ok := y.(int64); ok { // exact, beyond a float64's 53 bits
			return compareOrdered(a, b)
		}
	}
	a, _ := number(x)
	b, _ := number(y)
	return compareOrdered(a, b)
}

func compareOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func checkArith(n *node, ts []*typ, fs []evalFn) (*typ, evalFn, error) {
	op := n.op
	switch {
	case op == "+" && ts[0] == stringT && ts[1] == stringT:
		return stringT, func(in *Input) (any, error) {
			x, y, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			return x.(string) + y.(string), nil
		}, nil
	case ts[0] == intT && ts[1] == intT:
		return intT, func(in *Input) (any, error) {
			x, y, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			a, b := x.(int64), y.(int64)
			switch op {
			case "+":
				return a + b, nil
			case "-":
				return a - b, nil
			case "*":
				return a * b, nil
			}
			if b == 0 {
				return nil, errors.New("division by zero")
			}
			if op == "/" {
				return a / b, nil
			}
			return a % b, nil
		}, nil
	case op != "%" && ts[0].numeric() && ts[1].numeric():
		return doubleT, func(in *Input) (any, error) {
			x, y, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			a, _ := number(x)
			b, _ := number(y)
			switch op {
			case "+":
				return a + b, nil
			case "-":
				return a - b, nil
			case "*":
				return a * b, nil
			}
			return a / b, nil
		}, nil
	}
	return nil, nil, overload(n, "_"+op+"_", ts...)
}

// functions are the rule language's functions: size(x) (also x.size()),
// s.contains(t), s.startsWith(t), s.endsWith(t), int(x) and double(x).
func checkCall(n *node) (*typ, evalFn, error) {
	ts, fs, err := checkArgs(n.args)
	if err != nil {
		return nil, nil, err
	}
	one := func(t *typ, f func(v any) (any, error)) (*typ, evalFn, error) {
		return t, func(in *Input) (any, error) {
			v, err := fs[0](in)
			if err != nil {
				return nil, err
			}
			return f(v)
		}, nil
	}
	switch {
	case n.name == "size" && len(ts) == 1 && (ts[0] == stringT || ts[0].kind == "list" || ts[0].kind == "map"):
		return one(intT, func(v any) (any, error) {
			switch v := v.(type) {
			case string:
				return int64(len([]rune(v))), nil
			case []any:
				return int64(len(v)), nil
			}
			return int64(reflect.ValueOf(v).Len()), nil
		})
	case n.name == "int" && len(ts) == 1 && ts[0].numeric():
		return one(intT, func(v any) (any, error) {
			f, _ := number(v)
			return int64(f), nil
		})
	case n.name == "double" && len(ts) == 1 && ts[0].numeric():
		return one(doubleT, func(v any) (any, error) {
			f, _ := number(v)
			return f, nil
		})
	case len(ts) == 2 && ts[0] == stringT && ts[1] == stringT:
		test, ok := map[string]func(s, t string) bool{"contains": strings.Contains, "startsWith": strings.HasPrefix, "endsWith": strings.HasSuffix}[n.name]
		if !ok {
			break
		}
		return boolT, func(in *Input) (any, error) {
			s, t, err := both(in, fs[0], fs[1])
			if err != nil {
				return nil, err
			}
			return test(s.(string), t.(string)), nil
		}, nil
	}
	known := map[string]bool{"size": true, "int": true, "double": true, "contains": true, "startsWith": true, "endsWith": true}
	if !known[n.name] {
		return nil, nil, &syntaxError{n.pos, fmt.Sprintf("undeclared reference to '%s'", n.name)}
	}
	return nil, nil, overload(n, n.name, ts...)
}
