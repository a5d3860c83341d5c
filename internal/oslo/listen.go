package oslo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// NotificationHandler processes one notification. Returning an error (or
// panicking) puts the notification back on the queue for redelivery.
type NotificationHandler func(ctx context.Context, n *Notification) error

// ListenerConfig says what a listener consumes.
type ListenerConfig struct {
	// Exchange defaults to the transport's control exchange (Nova's is "nova").
	Exchange string
	// Topic, e.g. "versioned_notifications".
	Topic string
	// Queue is the listener's own queue (oslo's pool name). It must not be
	// <topic>.<priority>: that queue belongs to other consumers and reading
	// it would steal their notifications.
	Queue string
	// Priorities to bind; empty means all.
	Priorities []string
}

// requeueDelay spaces out redeliveries of a notification whose handler
// failed, so a persistent failure does not spin.
const requeueDelay = 200 * time.Millisecond

// Listener consumes notifications from its own queue, bound to the
// topic's routing keys, and acknowledges each only after its handler
// returns, so nothing it was given is lost.
type Listener struct {
	t         *Transport
	cfg       ListenerConfig
	h         NotificationHandler
	log       *slog.Logger
	ready     chan struct{}
	readyOnce sync.Once
	dedup     *recentIDs
}

// NewListener returns a listener; Run starts it.
func NewListener(tr *Transport, cfg ListenerConfig, h NotificationHandler) *Listener {
	return &Listener{
		t: tr, cfg: cfg, h: h,
		log:   tr.log.With("topic", cfg.Topic, "queue", cfg.Queue),
		ready: make(chan struct{}),
		dedup: newRecentIDs(dedupSize),
	}
}

// Ready is closed once the listener first consumes from the broker.
func (l *Listener) Ready() <-chan struct{} { return l.ready }

func (l *Listener) priorities() []string {
	if len(l.cfg.Priorities) == 0 {
		return notificationPriorities
	}
	out := make([]string, len(l.cfg.Priorities))
	for i, p := range l.cfg.Priorities {
		// Invalid names are reported by validate.
		up, _ := NormalizePriority(p)
		out[i] = strings.ToLower(up)
		if up == "" {
			out[i] = p
		}
	}
	return out
}

func (l *Listener) validate() error {
	var errs []error
	if l.cfg.Topic == "" {
		errs = append(errs, errors.New("topic is required"))
	}
	if l.cfg.Queue == "" {
		errs = append(errs, errors.New("queue is required: a listener consumes its own queue"))
	}
	for _, p := range l.priorities() {
		if _, err := NormalizePriority(p); err != nil {
			errs = append(errs, err)
		}
		if l.cfg.Queue == l.cfg.Topic+"."+p {
			errs = append(errs, fmt.Errorf("queue %q is the publishers' default queue; consuming it would steal other consumers' notifications", l.cfg.Queue))
		}
	}
	if l.h == nil {
		errs = append(errs, errors.New("handler is required"))
	}
	return errors.Join(errs...)
}

// Run consumes until ctx is done, reconnecting whenever the broker goes away.
func (l *Listener) Run(ctx context.Context) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("notification listener: %w", err)
	}
	l.t.consumeLoop(ctx, consumer{
		purpose: "listener:" + l.cfg.Queue,
		setup:   l.setup,
		handle:  func(d amqp.Delivery) { l.handle(ctx, d) },
		up:      func() { l.readyOnce.Do(func() { close(l.ready) }) },
		refresh: func(cc *consumeConn) error { return l.declare(cc.ch) },
	})
	return nil
}

// declare declares the exchange and the listener's queue and binds it; it
// is idempotent: refresh runs it again.
func (l *Listener) declare(ch *amqp.Channel) error {
	o := &l.t.opts
	exchange := l.cfg.Exchange
	if exchange == "" {
		exchange = l.t.exchange
	}
	if err := l.t.declareTopicExchange(ch, exchange); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(l.cfg.Queue, o.Durable(), o.AMQPAutoDelete, false, false, o.QueueArguments()); err != nil {
		return fmt.Errorf("declare queue %q: %w", l.cfg.Queue, err)
	}
	for _, p := range l.priorities() {
		if err := ch.QueueBind(l.cfg.Queue, l.cfg.Topic+"."+p, exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q: %w", l.cfg.Queue, err)
		}
	}
	return nil
}

func (l *Listener) setup(cc *consumeConn) (<-chan amqp.Delivery, error) {
	ch, o := cc.ch, &l.t.opts
	if err := l.declare(ch); err != nil {
		return nil, err
	}
	d, err := ch.Consume(l.cfg.Queue, "", false, false, false, false, o.ConsumerArguments())
	if err != nil {
		return nil, fmt.Errorf("consume queue %q: %w", l.cfg.Queue, err)
	}
	return d, nil
}

func (l *Listener) handle(ctx context.Context, d amqp.Delivery) {
	// The size is checked before anything is decoded.
	err := l.t.checkSize(d.Body)
	var n *Notification
	if err == nil {
		n, err = DecodeNotification(d.Body)
	}
	if err != nil {
		// oslo rejects what it cannot decode; requeueing would loop forever.
		l.log.Warn("dropping unusable notification", "error", err, "bytes", len(d.Body))
		if err := d.Reject(false); err != nil {
			l.log.Warn("reject failed", "error", err)
		}
		return
	}
	if n.UniqueID != "" && l.dedup.seen(n.UniqueID) {
		if err := d.Ack(false); err != nil {
			l.log.Warn("ack failed", "error", err)
		}
		return
	}
	if err := l.call(ctx, n); err != nil {
		l.log.Warn("notification handler failed, requeueing", "event_type", n.EventType, "error", err)
		sleepCtx(ctx, requeueDelay)
		if err := d.Nack(false, true); err != nil {
			l.log.Warn("requeue failed", "error", err)
		}
		return
	}
	if err := d.Ack(false); err != nil {
		// The broker redelivers an unacknowledged message; nothing is lost.
		l.log.Warn("ack failed", "error", err)
		return
	}
	if n.UniqueID != "" {
		l.dedup.add(n.UniqueID)
	}
}

func (l *Listener) call(ctx context.Context, n *Notification) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return l.h(ctx, n)
}
