package telemetry

import (
	"testing"

	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestTriggerConditions(t *testing.T) {
	tests := []struct {
		cond string
		prev *model.Value
		v    model.Value
		want bool
	}{
		{"", nil, model.Int(1), true},
		{"> 4", nil, model.Uint(5), true},
		{"> 4", nil, model.Uint(4), false},
		{">= 4", nil, model.Float(4), true},
		{"< 0.5", nil, model.Float(0.25), true},
		{"<= -1", nil, model.Int(-1), true},
		{"== DOWN", nil, model.String("DOWN"), true},
		{"== DOWN", nil, model.String("UP"), false},
		{"!= 0", nil, model.Int(0), false},
		{"== 2", nil, model.String("2"), true},
		{"> 4", nil, model.String("five"), false},
		{"changed", nil, model.Int(1), true},
		{"changed", ptr(model.Int(1)), model.Int(1), false},
		{"changed", ptr(model.Int(1)), model.Int(2), true},
	}
	for _, tt := range tests {
		t.Run(tt.cond+"/"+tt.v.String(), func(t *testing.T) {
			h, err := newHub(Config{Triggers: []TriggerRule{{Task: "x", Path: "/", Condition: tt.cond}}}, nil, nil, Sinks{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var st trigState
			if tt.prev != nil {
				st = trigState{value: *tt.prev, seen: true}
			}
			if got := h.trigs[0].holds(st, tt.v); got != tt.want {
				t.Errorf("got %v want %v", got, tt.want)
			}
		})
	}
}

func ptr(v model.Value) *model.Value { return &v }
