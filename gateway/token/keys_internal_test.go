package token

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"math/big"
	"testing"
)

// TestRawToDER: the DER form of a JWS ECDSA signature is what encoding/asn1
// writes for its r and s, including values with leading zero bytes and
// with the high bit set.
func TestRawToDER(t *testing.T) {
	for name, sig := range map[string][]byte{
		"high bits set": bytes.Repeat([]byte{0xff}, 64),
		"ones":          append(append(make([]byte, 31), 1), append(make([]byte, 31), 1)...),
		"zeros":         make([]byte, 64),
		"leading zeros": append(append(make([]byte, 3), bytes.Repeat([]byte{0x80}, 29)...), append([]byte{0, 0x7f}, bytes.Repeat([]byte{1}, 30)...)...),
		"random":        func() []byte { b := make([]byte, 64); _, _ = rand.Read(b); return b }(),
	} {
		t.Run(name, func(t *testing.T) {
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
			if err != nil {
				t.Fatal(err)
			}
			if got := rawToDER(nil, sig); !bytes.Equal(got, want) {
				t.Fatalf("DER %x, want %x", got, want)
			}
		})
	}
}
