package output

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", name, diff)
	}
}

var t0 = time.Date(2026, 11, 25, 22, 22, 27, 80984000, time.UTC)

func hosts() List {
	exp := t0.Add(15 * time.Second)
	return List{
		Columns: []Column{{Name: "Name"}, {Name: "Status"}, {Name: "Profiles"}, {Name: "Seq"}, {Name: "Verified At"},
			{Name: "Reason"}, {Name: "Enrollment", Long: true}, {Name: "Expires At", Long: true}},
		Rows: [][]any{
			{"compute-2", "untrusted", []string{}, uint64(12), t0, "evidence: replay_mismatch: verify quote: event log replay does not match quoted PCRs: PCR 4", "enrolled", &exp},
			{"compute-1", "trusted", []string{"build-a", "build-b"}, uint64(3), t0.Add(-time.Minute), "", "enrolled", &exp},
			{"compute-10", "unknown", nil, nil, nil, `EK awaiting approval, "ek_changed"`, "pending_approval", (*time.Time)(nil)},
		},
	}
}

func record() Record {
	return Record{
		Fields: []Column{{Name: "name"}, {Name: "status"}, {Name: "profiles"}, {Name: "seq"}, {Name: "verified_at"},
			{Name: "pcrs"}, {Name: "reasons"}, {Name: "assigned"}, {Name: "public_key", Long: true}},
		Values: []any{"compute-1", "untrusted", []string{"build-a"}, uint64(7), t0,
			map[string]string{"10": "cc", "2": "bb", "0": "aa"},
			[]string{"profile build-a: PCR 4 mismatch", `it's "quoted" $HOME`}, false,
			"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"},
	}
}

// TestListGolden: every list format, column selection, sorting, --long and
// a table fitted to a narrow terminal, against golden files.
func TestListGolden(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		long bool
	}{
		{"list_table.golden", Options{}, false},
		{"list_table_long.golden", Options{}, true},
		{"list_table_width60.golden", Options{Width: 60}, false},
		{"list_table_width100.golden", Options{Width: 100}, true},
		{"list_table_sorted.golden", Options{SortColumns: []string{"Status", "Name"}, SortDescending: true}, false},
		{"list_json.golden", Options{Format: FormatJSON}, false},
		{"list_json_noindent.golden", Options{Format: FormatJSON, NoIndent: true, Columns: []string{"Seq", "Name"}}, false},
		{"list_yaml.golden", Options{Format: FormatYAML}, true},
		{"list_value.golden", Options{Format: FormatValue, Columns: []string{"Name", "Status"}, SortColumns: []string{"Seq"}}, false},
		{"list_csv.golden", Options{Format: FormatCSV}, false},
		{"list_csv_minimal.golden", Options{Format: FormatCSV, Quote: QuoteMinimal, Columns: []string{"Name", "Seq", "Reason", "Expires At"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := hosts().Write(&b, tc.o, tc.long); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, b.String())
		})
	}
}

func TestRecordGolden(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		long bool
	}{
		{"record_table.golden", Options{}, true},
		{"record_table_width50.golden", Options{Width: 50}, false},
		{"record_json.golden", Options{Format: FormatJSON}, false},
		{"record_yaml.golden", Options{Format: FormatYAML}, true},
		{"record_value.golden", Options{Format: FormatValue, Columns: []string{"seq", "public_key"}}, false},
		{"record_shell.golden", Options{Format: FormatShell, Prefix: "tp_"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := record().Write(&b, tc.o, tc.long); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, b.String())
		})
	}
}

// TestTableFits: a fitted table is never wider than asked, down to the
// width where every column is at its floor (79 for these eight columns:
// 54 of text, 25 of borders); below that it stays at the floor.
func TestTableFits(t *testing.T) {
	for width := 20; width <= 240; width++ {
		var b bytes.Buffer
		if err := hosts().Write(&b, Options{Width: width}, true); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			if n := len([]rune(line)); n > max(width, 79) {
				t.Fatalf("width %d: line of %d: %q", width, n, line)
			}
		}
	}
}

func TestEmptyList(t *testing.T) {
	l := List{Columns: []Column{{Name: "Name"}}}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, ""},
		{Options{PrintEmpty: true}, "+------+\n| Name |\n+------+\n+------+\n"},
		{Options{Format: FormatJSON}, "[]\n"},
		{Options{Format: FormatCSV}, "\"Name\"\r\n"},
	} {
		var b bytes.Buffer
		if err := l.Write(&b, tc.o, false); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%+v: %q, want %q", tc.o, b.String(), tc.want)
		}
	}
}

// TestUsageErrors: unknown formats and columns are refused with ErrUsage,
// naming what was wrong; nothing is printed.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name   string
		write  func(*bytes.Buffer) error
		inText string
	}{
		{"list format", func(b *bytes.Buffer) error { return hosts().Write(b, Options{Format: "shell"}, false) }, `format "shell"`},
		{"record format", func(b *bytes.Buffer) error { return record().Write(b, Options{Format: "csv"}, false) }, `format "csv"`},
		{"unknown column", func(b *bytes.Buffer) error { return hosts().Write(b, Options{Columns: []string{"name"}}, false) }, `no column "name"`},
		{"unknown sort column", func(b *bytes.Buffer) error { return hosts().Write(b, Options{SortColumns: []string{"Nope"}}, false) }, `sort by "Nope"`},
		{"sort a record", func(b *bytes.Buffer) error { return record().Write(b, Options{SortColumns: []string{"name"}}, false) }, "lists only"},
		{"quote", func(b *bytes.Buffer) error { return hosts().Write(b, Options{Format: FormatCSV, Quote: "some"}, false) }, `--quote "some"`},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		err := tc.write(&b)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.inText) {
			t.Errorf("%s: error %v, want ErrUsage mentioning %q", tc.name, err, tc.inText)
		}
		if b.Len() != 0 {
			t.Errorf("%s: printed %q", tc.name, b.String())
		}
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		in    string
		width int
		want  []string
	}{
		{"short", 10, []string{"short"}},
		{"a b c d e", 3, []string{"a b", "c d", "e"}},
		{"abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"one\ntwo words", 4, []string{"one", "two", "words"[:4], "s"}},
		{"grüße welt", 5, []string{"grüße", "welt"}},
	}
	for _, tc := range tests {
		if got := wrap(tc.in, tc.width); !cmp.Equal(got, tc.want) {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}
