package tpm

import (
	"bytes"
	"testing"
	"testing/iotest"
)

func TestReadUpTo(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	for _, tc := range []struct {
		name        string
		hint, limit int
		want        int
	}{
		{"hint exact", 10000, 1 << 20, 10000},
		{"hint small, grows", 1, 1 << 20, 10000},
		{"hint large", 1 << 20, 1 << 20, 10000},
		{"limit cuts", 100, 4096, 4096},
		{"limit below hint", 8192, 3000, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per Read, as a pseudo-file may answer.
			got, err := readUpTo(iotest.OneByteReader(bytes.NewReader(data)), tc.hint, tc.limit)
			if err != nil || !bytes.Equal(got, data[:tc.want]) {
				t.Errorf("readUpTo = %d bytes, %v; want %d", len(got), err, tc.want)
			}
		})
	}
	if _, err := readUpTo(iotest.ErrReader(iotest.ErrTimeout), 10, 100); err == nil {
		t.Error("read error not returned")
	}
}
