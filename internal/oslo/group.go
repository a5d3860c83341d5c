package oslo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ServerGroup runs many RPC servers of one topic over one consuming
// connection, for processes that stand in for many hosts (fleet
// simulators, load tools). Each member consumes its directed queue,
// <topic>.<server>, declared and bound as a [Server] declares it (and
// declared again every 30 s), and handles requests exactly as a Server
// does: acknowledged before dispatch, size-checked, deduplicated, replied
// to once. Unlike a Server, a member does not consume the topic's shared
// queue or a fanout queue: a group answers only calls addressed to one of
// its servers; and the periodic re-declaration runs on a channel of its
// own, a few members at a time, so that a large group keeps serving while
// it re-declares. A real agent uses NewServer.
type ServerGroup struct {
	t        *Transport
	topic    string
	exchange string
	members  map[string]*Server // by queue name
	order    []string
	ready    chan struct{}
	once     sync.Once
	// refreshing is set while a background re-declaration runs.
	refreshing atomic.Bool
	// Concurrency bounds handlers in flight across the group (default
	// executorPoolSize × 4).
	Concurrency int
}

// NewServerGroup returns an empty group for topic on tr's control exchange.
func NewServerGroup(tr *Transport, topic string) *ServerGroup {
	return &ServerGroup{t: tr, topic: topic, exchange: tr.exchange, members: map[string]*Server{}, ready: make(chan struct{})}
}

// Add adds the server named server with its endpoints; call it before Run.
func (g *ServerGroup) Add(server string, endpoints ...Endpoint) {
	q := g.topic + "." + server
	if _, ok := g.members[q]; ok {
		return
	}
	g.members[q] = NewServer(g.t, Target{Topic: g.topic, Server: server}, endpoints...)
	g.order = append(g.order, q)
}

// Len is the number of members.
func (g *ServerGroup) Len() int { return len(g.order) }

// Ready is closed once every member consumes.
func (g *ServerGroup) Ready() <-chan struct{} { return g.ready }

// Run serves until ctx is done, reconnecting whenever the broker goes away
// (failing over across the transport_url's hosts), then waits for the
// handlers still running.
func (g *ServerGroup) Run(ctx context.Context) error {
	if g.topic == "" || len(g.order) == 0 {
		return errors.New("rpc server group: no topic or no members")
	}
	n := g.Concurrency
	if n <= 0 {
		n = 4 * executorPoolSize
	}
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	g.t.consumeLoop(ctx, consumer{
		purpose: fmt.Sprintf("rpc-server-group:%s:%d", g.topic, len(g.order)),
		setup:   g.setup,
		handle: func(d amqp.Delivery) {
			s, ok := g.members[d.ConsumerTag]
			if !ok {
				_ = d.Nack(false, false)
				return
			}
			s.handleBounded(ctx, d, sem, &wg)
		},
		up: func() { g.once.Do(func() { close(g.ready) }) },
		refresh: func(cc *consumeConn) error {
			if g.refreshing.CompareAndSwap(false, true) {
				spread := declarationRefresh / 3
				wg.Go(func() {
					defer g.refreshing.Store(false)
					g.redeclare(ctx, cc, spread)
				})
			}
			return nil
		},
	})
	wg.Wait()
	return nil
}

// redeclare declares every member again on a channel of its own, in
// batches spread over spread: declaring thousands of queues in one go on
// the consuming goroutine would stop deliveries for as long. A failure is
// logged; the next refresh tries again (a lost connection is noticed by
// the consume loop).
func (g *ServerGroup) redeclare(ctx context.Context, cc *consumeConn, spread time.Duration) {
	ch, err := cc.conn.Channel()
	if err != nil {
		g.t.log.Warn("re-declaring group queues failed", "topic", g.topic, "error", err)
		return
	}
	defer func() { _ = ch.Close() }()
	const batch = 25
	pause := spread / time.Duration(len(g.order)/batch+1)
	for i := 0; i < len(g.order); i += batch {
		if err := g.declareSome(ch, g.order[i:min(i+batch, len(g.order))]); err != nil {
			g.t.log.Warn("re-declaring group queues failed", "topic", g.topic, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-cc.done:
			return
		case <-time.After(pause):
		}
	}
}

// declare declares the exchange and every member's directed queue and
// binding (idempotent).
func (g *ServerGroup) declare(ch *amqp.Channel) error {
	return g.declareSome(ch, g.order)
}

// declareSome declares the exchange and the queues qs with their bindings.
func (g *ServerGroup) declareSome(ch *amqp.Channel, qs []string) error {
	o := &g.t.opts
	if err := g.t.declareTopicExchange(ch, g.exchange); err != nil {
		return err
	}
	for _, q := range qs {
		if _, err := ch.QueueDeclare(q, o.Durable(), o.AMQPAutoDelete, false, false, o.QueueArguments()); err != nil {
			return fmt.Errorf("declare queue %q: %w", q, err)
		}
		if err := ch.QueueBind(q, q, g.exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q: %w", q, err)
		}
	}
	return nil
}

func (g *ServerGroup) setup(cc *consumeConn) (<-chan amqp.Delivery, error) {
	if err := g.declare(cc.ch); err != nil {
		return nil, err
	}
	args := g.t.opts.ConsumerArguments()
	merged := make(chan amqp.Delivery)
	var wg sync.WaitGroup
	for _, q := range g.order {
		// The consumer tag is the queue name: it routes deliveries to
		// their member.
		d, err := cc.ch.Consume(q, q, false, false, false, false, args)
		if err != nil {
			return nil, fmt.Errorf("consume queue %q: %w", q, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range d {
				select {
				case merged <- m:
				case <-cc.done:
					return
				}
			}
			// The broker cancelled this member's consumer (its queue was
			// deleted) while the connection stays up: re-declaring alone
			// would not consume again, so the group reconnects.
			select {
			case <-cc.done:
			default:
				g.t.log.Warn("group consumer cancelled by the broker, reconnecting", "queue", q)
				cc.close()
			}
		}()
	}
	go func() { wg.Wait(); close(merged) }()
	return merged, nil
}
