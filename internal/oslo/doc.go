// Package oslo speaks oslo.messaging's RabbitMQ wire format (OpenStack Zed,
// oslo.messaging 14.0.x, AMQP 0-9-1 "rabbit" driver), so Go services can
// call, serve and notify alongside Python OpenStack services such as Nova.
//
// The package has two layers.
//
// The pure layer does no I/O (apart from TLSConfig reading the configured
// certificate files) and never logs:
//
//   - [ParseTransportURL] parses a [DEFAULT] transport_url the way oslo's
//     TransportURL.parse does (rabbit:// and kombu:// only; amqp:// selects
//     the AMQP 1.0 driver in oslo and is rejected), including several hosts,
//     percent-encoded credentials, bracketed IPv6 hosts and query options
//     that override [oslo_messaging_rabbit] settings ([TransportURL.ApplyOptions]).
//   - [RabbitOptions] holds the Zed [oslo_messaging_rabbit] options with
//     their Zed defaults ([DefaultRabbitOptions]); options oslo has but this
//     package cannot honour are rejected by [RabbitOptions.Validate], never
//     silently ignored. It derives the queue arguments, durability and TLS
//     settings oslo would use.
//   - The message codecs: the "2.0" envelope ([Wrap], [Unwrap]), RPC
//     requests ([EncodeRequest], [DecodeRequest]) with their `_context_*`
//     keys, replies ([EncodeReply], [DecodeReply]) with remote failures
//     ([Failure], [RemoteError]), notifications ([EncodeNotification],
//     [DecodeNotification]), version compatibility ([VersionCompatible]) and
//     identifiers ([NewUniqueID], [NewMessageID], [PythonTimestamp]).
//
// Decoders treat every message as untrusted input: they accept any key
// order and formatting, reject what oslo would reject (unknown envelope
// versions, non-object bodies, wrongly typed fields) with errors wrapping
// [ErrMalformedMessage] or [ErrUnsupportedEnvelopeVersion], and preserve
// numbers exactly (json.Number in context values, failure args and kwargs).
// Encoders write the v2 envelope, never escape HTML characters and keep
// non-ASCII text as UTF-8 (Python's json module accepts both that and the
// \uXXXX escapes it writes itself).
//
// The runtime layer ([NewTransport], [Client], [NewServer],
// [NewServerGroup], [NewNotifier], [NewListener]) connects to RabbitMQ with github.com/rabbitmq/amqp091-go,
// declares exchanges and queues with the same names, flags and arguments as
// oslo.messaging, and reconnects after broker failures. Its semantics follow
// oslo's:
//
//   - Publishing uses one connection per [Transport] with a pool of
//     publisher-confirm channels; every message carries content_type
//     application/json and delivery_mode 2, calls an expiration equal to
//     their timeout.
//   - A [Server] consumes <topic>, <topic>.<server> and a private
//     <topic>_fanout_<uuid> queue on its own connection, acknowledges each
//     request before dispatching it (at-most-once), drops repeated
//     _unique_id values, messages without a JSON content type and requests
//     published to the default exchange (oslo clients never do; it would
//     bypass RabbitMQ's topic permissions), checks
//     namespace and version as oslo's dispatcher does, and replies once with
//     ending=true to the caller's queue on the default exchange (mandatory,
//     retried while the queue is missing). It sends ending=false keep-alives
//     only when the caller asked for call monitoring (_timeout).
//   - A [ServerGroup] runs many servers of one topic on one connection:
//     each member consumes its <topic>.<server> queue only (not the topic's
//     shared or fanout queues) and handles requests as a Server does. It is
//     for processes that stand in for many hosts (fleet simulators).
//   - A [Client] call waits on the transport's single reply_<uuid> queue,
//     declared exclusive (oslo's is not), so no other connection can read,
//     purge or delete it, and named anew on every connection. A
//     lost broker connection fails calls in flight with [ErrConnection] at
//     once; no reply by the deadline gives [ErrTimeout]; a remote failure
//     gives *[RemoteError].
//   - A [Listener] binds its own queue (never the publishers' shared
//     <topic>.<priority> queue) and acknowledges a notification only after
//     its handler returns; a handler error requeues it.
//   - Every received body (requests, replies, notifications) is checked
//     against the transport's maximum message size ([Config.MaxMessageSize],
//     default [DefaultMaxMessageSize]; oslo's rabbit driver has no such
//     option) before it is decoded; larger ones are dropped. A call whose
//     reply is too large or does not decode fails at once with
//     [ErrInvalidReply] rather than timing out; a request that is too large
//     or does not decode gets a ValueError reply when its reply address can
//     be read without decoding it (one attempt, under the executor bound).
//   - Servers and listeners declare their exchanges, queues and bindings
//     again every 30 s: permission to declare an exchange (which every oslo
//     client of it needs) is also permission to delete it, bindings and all.
//   - Servers and listeners reconnect by themselves with oslo's backoff
//     (rabbit_retry_interval, rabbit_retry_backoff, rabbit_interval_max),
//     failing over across the transport_url's hosts.
//
// Work caused by a received message is bounded: a server runs at most 64
// handlers and failure replies at once, all of which Run waits for.
//
// What this package does not do: it does not authenticate or authorise the
// sender of a message. Anything that can publish to the broker vhost can
// send requests and notifications, and the request context (user, roles,
// auth token) is whatever the sender put there, exactly as in oslo.messaging;
// callers that act on it must verify it themselves.
package oslo
