package devices

import "testing"

func TestBrokerURL(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"tcp", "tcp://127.0.0.1:1883", "tcp://127.0.0.1:1883", true},
		{"mqtt is tcp", "mqtt://broker:1883", "tcp://broker:1883", true},
		{"mqtts is ssl", "mqtts://broker:8883", "ssl://broker:8883", true},
		{"ssl", "ssl://broker:8883", "ssl://broker:8883", true},
		{"no port", "tcp://broker", "", false},
		{"unknown scheme", "ws://broker:80", "", false},
		{"garbage", "::", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := brokerURL(tc.in)
			if !tc.ok {
				if err == nil {
					t.Fatalf("brokerURL(%q) = %v, want an error", tc.in, u)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("brokerURL(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
			}
		})
	}
}
