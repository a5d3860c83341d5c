package oslo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

func uuid4() [16]byte {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (it crashes the program instead)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// NewUniqueID is a random uuid4 as 32 hex digits, the form of _unique_id,
// _msg_id and the suffix of reply and fanout queue names.
func NewUniqueID() string {
	u := uuid4()
	return hex.EncodeToString(u[:])
}

// NewMessageID is a random uuid4 in the dashed form of notification
// message_ids.
func NewMessageID() string {
	h := NewUniqueID()
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// pythonLayout is str(datetime) with microseconds.
const pythonLayout = "2006-01-02 15:04:05.000000"

// PythonTimestamp formats t in UTC as Python's str(datetime) does for
// oslo's timeutils.utcnow(): "2026-11-25 19:47:24.208091", without a zone,
// and without the fraction when the microseconds are zero.
func PythonTimestamp(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	if t.Nanosecond() == 0 {
		return t.Format(time.DateTime)
	}
	return t.Format(pythonLayout)
}

// ParsePythonTimestamp parses a notification timestamp (PythonTimestamp's
// format, with or without microseconds) as UTC.
func ParsePythonTimestamp(s string) (time.Time, error) {
	layout := time.DateTime
	if strings.Contains(s, ".") {
		layout = pythonLayout
	}
	t, err := time.ParseInLocation(layout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse python timestamp %q: %w", s, err)
	}
	return t, nil
}
