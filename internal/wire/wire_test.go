package wire

import (
	"errors"
	"hash/fnv"
	"strings"
	"testing"
)

func TestPartitionIsFNV1a(t *testing.T) {
	for _, game := range []string{"a", "game-1", "Z_9", strings.Repeat("x", 64)} {
		h := fnv.New32a()
		h.Write([]byte(game))
		for _, n := range []int{1, 2, 7, 64} {
			if got, want := Partition(game, n), int(h.Sum32()%uint32(n)); got != want {
				t.Fatalf("Partition(%q, %d) = %d, want %d", game, n, got, want)
			}
		}
	}
}

func TestValidateGame(t *testing.T) {
	for name, tc := range map[string]struct {
		id string
		ok bool
	}{
		"simple":     {"g1", true},
		"all chars":  {"AZaz09_-", true},
		"max length": {strings.Repeat("g", MaxGameLen), true},
		"empty":      {"", false},
		"too long":   {strings.Repeat("g", MaxGameLen+1), false},
		"dot":        {"a.b", false},
		"star":       {"a*", false},
		"gt":         {">", false},
		"space":      {"a b", false},
		"unicode":    {"spiel-ü", false},
		"slash":      {"a/b", false},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidateGame(tc.id)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateGame(%q) = %v", tc.id, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidGame) {
				t.Fatalf("error %v does not wrap ErrInvalidGame", err)
			}
		})
	}
}

func TestPageStart(t *testing.T) {
	for id, want := range map[uint64]uint64{1: 1, 2: 1, 128: 1, 129: 129, 256: 129, 257: 257} {
		if got := PageStart(id); got != want {
			t.Fatalf("PageStart(%d) = %d, want %d", id, got, want)
		}
	}
}

func TestStampedTS(t *testing.T) {
	for in, want := range map[string]int64{
		`{"type":"a","msg_id":7,"ts":1764460800123}`: 1764460800123,
		`{"msg_id":1,"ts":0}`:                        0,
	} {
		if ts, ok := StampedTS([]byte(in)); !ok || ts != want {
			t.Fatalf("StampedTS(%s) = %d, %v; want %d", in, ts, ok, want)
		}
	}
	for _, in := range []string{``, `}`, `{"ts":}`, `{"ts":12`, `{"x":12}`, `{"ts":"12"}`, `12}`, `{"ts":1234567890123456789}`} {
		if ts, ok := StampedTS([]byte(in)); ok {
			t.Fatalf("StampedTS(%q) = %d, accepted", in, ts)
		}
	}
}
