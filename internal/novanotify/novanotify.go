// Package novanotify reads Nova's versioned instance notifications as the
// attestation service's launch listener receives them: the oslo envelope is
// package oslo's; this package decodes instance.create.end's
// InstanceCreatePayload. Nova publishes them with oslo's messagingv2 driver
// on exchange "nova" (control_exchange), routing key
// "versioned_notifications.info" (nova.conf [notifications]
// notification_format = versioned or both, [oslo_messaging_notifications]
// driver = messagingv2). A listener binds its own queue to that routing
// key and never consumes Nova's queue.
//
// Everything here is Nova's claim, as the bus carries it: anyone with
// broker credentials can send such a notification. The launch checks it on
// the host. The package is pure: no I/O, no logging.
package novanotify

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/trustpool/trustpool/internal/attestrpc"
)

// Names on the bus.
const (
	// Exchange is Nova's control exchange.
	Exchange = "nova"
	// Topic is [notifications] versioned_notifications_topics' default.
	Topic = "versioned_notifications"
	// EventCreateEnd is sent when an instance has been built and spawned.
	EventCreateEnd = "instance.create.end"
	// MetadataKey is the server metadata key that names a launch
	// (openstack server create --property trustpool_launch=<id>).
	MetadataKey = "trustpool_launch"
)

// MaxPayload bounds a notification payload the listener decodes.
const MaxPayload = 1 << 20

// ErrPayload means a notification payload is not a usable
// InstanceCreatePayload.
var ErrPayload = errors.New("invalid instance notification payload")

// InstanceEvent is the part of instance.create.end a launch needs.
type InstanceEvent struct {
	InstanceID string
	ProjectID  string
	// Host is the compute service host Nova says runs the instance.
	Host string
	// LaunchID is the trustpool_launch metadata value ("" when absent).
	LaunchID string
	// State is the instance's vm_state ("active" after a good build).
	State string
}

// novaObject is the oslo.versionedobjects envelope.
type novaObject struct {
	Name      string          `json:"nova_object.name"`
	Namespace string          `json:"nova_object.namespace"`
	Version   string          `json:"nova_object.version"`
	Data      json.RawMessage `json:"nova_object.data"`
}

// ParseCreateEnd decodes the payload of an instance.create.end
// notification (an InstanceCreatePayload, version 1.x). Fields other than
// the ones it reads are ignored, since Nova adds fields in minor versions;
// the ones it reads must have the right types. The result is Nova's claim,
// untrusted.
func ParseCreateEnd(payload []byte) (*InstanceEvent, error) {
	if len(payload) == 0 || len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: must be 1..%d bytes", ErrPayload, MaxPayload)
	}
	var obj novaObject
	if err := json.Unmarshal(payload, &obj); err != nil {
		return nil, fmt.Errorf("%w: not a nova object", ErrPayload)
	}
	if obj.Namespace != "nova" || obj.Name != "InstanceCreatePayload" || !strings.HasPrefix(obj.Version, "1.") {
		return nil, fmt.Errorf("%w: %s %s %s is not nova's InstanceCreatePayload 1.x", ErrPayload, short(obj.Namespace), short(obj.Name), short(obj.Version))
	}
	var d struct {
		UUID     *string           `json:"uuid"`
		TenantID *string           `json:"tenant_id"`
		Host     *string           `json:"host"`
		State    *string           `json:"state"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(obj.Data, &d); err != nil {
		return nil, fmt.Errorf("%w: data: uuid, tenant_id, host and state must be strings and metadata an object of strings", ErrPayload)
	}
	var errs []error
	if d.UUID == nil || !attestrpc.IsUUID(strings.ToLower(*d.UUID)) {
		errs = append(errs, errors.New("uuid is not a UUID"))
	}
	if d.TenantID == nil || *d.TenantID == "" || len(*d.TenantID) > 64 {
		errs = append(errs, errors.New("tenant_id must be 1..64 characters"))
	}
	if d.Host == nil || *d.Host == "" || len(*d.Host) > attestrpc.MaxHostLen || strings.ContainsFunc(*d.Host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, errors.New("host is missing or not a host name"))
	}
	ev := &InstanceEvent{}
	if id, ok := d.Metadata[MetadataKey]; ok {
		if !attestrpc.IsUUID(strings.ToLower(id)) {
			errs = append(errs, fmt.Errorf("metadata %s is not a launch id", MetadataKey))
		}
		ev.LaunchID = strings.ToLower(id)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	ev.InstanceID, ev.ProjectID, ev.Host = strings.ToLower(*d.UUID), *d.TenantID, *d.Host
	if d.State != nil {
		ev.State = *d.State
	}
	return ev, nil
}

func short(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q…", s[:40])
	}
	return fmt.Sprintf("%q", s)
}
