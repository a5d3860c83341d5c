package service

import (
	"context"
	"slices"
	"testing"

	"github.com/trustpool/trustpool/internal/attestrpc"
	"github.com/trustpool/trustpool/internal/verdict"
)

type recPub struct{ events []string }

func (p *recPub) PublishVerdicts(context.Context, []verdict.Signed) error { return nil }
func (p *recPub) Notify(_ context.Context, ev string, _ any) error {
	p.events = append(p.events, ev)
	return nil
}

// TestTrustNotificationsSwitch: [revocation] notifications = false silences
// trustpool.host.trusted / untrusted only.
func TestTrustNotificationsSwitch(t *testing.T) {
	all := []string{attestrpc.EventHostTrusted, attestrpc.EventHostUntrusted, attestrpc.EventHostEKChangeRequested, attestrpc.EventHostEnrolled}
	for _, on := range []bool{true, false} {
		rec := &recPub{}
		p := trustNotifications{Publisher: rec, on: on}
		for _, ev := range all {
			if err := p.Notify(t.Context(), ev, nil); err != nil {
				t.Fatal(err)
			}
		}
		want := all
		if !on {
			want = all[2:]
		}
		if !slices.Equal(rec.events, want) {
			t.Errorf("notifications=%v sent %v, want %v", on, rec.events, want)
		}
	}
}
