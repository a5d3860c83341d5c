package oslo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultCallTimeout is oslo's rpc_response_timeout default, used when the
// caller's context has no deadline.
const DefaultCallTimeout = 60 * time.Second

// Target names where a message goes, as oslo_messaging.Target does.
type Target struct {
	// Exchange defaults to the transport's control exchange.
	Exchange string
	// Topic is required.
	Topic string
	// Server directs a call or cast to one server's queue.
	Server string
	// Version is the RPC API version the message asks for ("1.0" if empty).
	Version string
	// Namespace selects an endpoint namespace.
	Namespace string
	// Fanout sends a cast to every server on the topic.
	Fanout bool
}

// Client sends calls and casts to a target. It is safe for concurrent use;
// the With* methods return modified copies.
type Client struct {
	t              *Transport
	target         Target
	timeout        time.Duration
	monitorTimeout time.Duration
}

// Client returns a client for target.
func (t *Transport) Client(target Target) *Client {
	return &Client{t: t, target: target, timeout: DefaultCallTimeout}
}

// WithTimeout sets the call timeout used when ctx has no earlier deadline.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.timeout = d
	return &cp
}

// WithCallMonitor asks the server for keep-alives (oslo's
// call_monitor_timeout): a call fails when no reply or keep-alive arrives
// for d, even before its overall timeout.
func (c *Client) WithCallMonitor(d time.Duration) *Client {
	cp := *c
	cp.monitorTimeout = d
	return &cp
}

// WithTarget returns a client whose target fields are changed by fn
// (oslo's prepare()).
func (c *Client) WithTarget(fn func(*Target)) *Client {
	cp := *c
	fn(&cp.target)
	return &cp
}

// Call invokes method on one server of the target and decodes the result
// into result (which may be nil). Remote failures return *RemoteError; no
// reply before the deadline returns ErrTimeout; a lost broker connection
// returns ErrConnection without waiting for the deadline.
func (c *Client) Call(ctx context.Context, rctx map[string]any, method string, args any, result any) error {
	if c.target.Fanout {
		return fmt.Errorf("call %s: fanout targets accept casts only", method)
	}
	if c.target.Topic == "" {
		return fmt.Errorf("call %s: target has no topic", method)
	}
	timeout := c.timeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	if d, ok := ctx.Deadline(); ok {
		if rem := time.Until(d); rem < timeout {
			timeout = rem
		}
	}
	if timeout <= 0 {
		return fmt.Errorf("call %s: %w", method, ErrTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := c.request(rctx, method, args)
	if err != nil {
		return err
	}
	lost, replyQ, err := c.t.replies.ensure(ctx)
	if err != nil {
		return fmt.Errorf("call %s: %w", method, err)
	}
	req.IsCall = true
	req.MsgID = NewUniqueID()
	req.ReplyQ = replyQ
	if c.monitorTimeout > 0 {
		s := c.monitorTimeout.Seconds()
		req.Timeout = &s
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return fmt.Errorf("call %s: encode request: %w", method, err)
	}
	replies := c.t.replies.register(req.MsgID)
	defer c.t.replies.unregister(req.MsgID)

	exchange, key := c.route()
	err = c.t.publish(ctx, publishing{
		exchange: exchange, key: key, body: body, expiration: timeout,
		declare:    func(ch *amqp.Channel) error { return c.t.declareTopicExchange(ch, exchange) },
		declareKey: "exchange:" + exchange,
	})
	if err != nil {
		return c.callErr(ctx, method, err)
	}

	var monitor <-chan time.Time
	var monitorTimer *time.Timer
	if c.monitorTimeout > 0 {
		monitorTimer = time.NewTimer(c.monitorTimeout)
		defer monitorTimer.Stop()
		monitor = monitorTimer.C
	}
	var last json.RawMessage
	for {
		select {
		case m := <-replies:
			if m.err != nil {
				return fmt.Errorf("call %s: reply from %s: %w", method, c.describe(), m.err)
			}
			r := m.r
			if r.Failure != nil {
				return &RemoteError{Failure: *r.Failure}
			}
			if len(r.Result) > 0 && string(r.Result) != "null" {
				last = r.Result
			}
			if !r.Ending {
				if monitorTimer != nil {
					monitorTimer.Reset(c.monitorTimeout)
				}
				continue
			}
			if result == nil || last == nil {
				return nil
			}
			if err := json.Unmarshal(last, result); err != nil {
				return fmt.Errorf("call %s: decode result: %w: %w", method, ErrInvalidReply, err)
			}
			return nil
		case <-monitor:
			return fmt.Errorf("call %s: no keep-alive from server within %s: %w", method, c.monitorTimeout, ErrTimeout)
		case <-lost:
			return fmt.Errorf("call %s: broker connection lost while waiting for reply: %w", method, ErrConnection)
		case <-c.t.replies.done:
			return fmt.Errorf("call %s: %w", method, ErrClosed)
		case <-ctx.Done():
			return c.callErr(ctx, method, ctx.Err())
		}
	}
}

func (c *Client) callErr(ctx context.Context, method string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("call %s: no reply from %s: %w", method, c.describe(), ErrTimeout)
	}
	return fmt.Errorf("call %s: %w", method, err)
}

// Cast sends method to the target without waiting for a result. It returns
// once the broker has confirmed the message.
func (c *Client) Cast(ctx context.Context, rctx map[string]any, method string, args any) error {
	if c.target.Topic == "" {
		return fmt.Errorf("cast %s: target has no topic", method)
	}
	req, err := c.request(rctx, method, args)
	if err != nil {
		return err
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return fmt.Errorf("cast %s: encode request: %w", method, err)
	}
	exchange, key := c.route()
	p := publishing{exchange: exchange, key: key, body: body}
	if c.target.Fanout {
		p.declare = func(ch *amqp.Channel) error { return declareFanoutExchange(ch, exchange) }
	} else {
		p.declare = func(ch *amqp.Channel) error { return c.t.declareTopicExchange(ch, exchange) }
	}
	p.declareKey = "exchange:" + exchange
	if err := c.t.publish(ctx, p); err != nil {
		return fmt.Errorf("cast %s to %s: %w", method, c.describe(), err)
	}
	return nil
}

func (c *Client) request(rctx map[string]any, method string, args any) (*Request, error) {
	a, err := encodeArgs(args)
	if err != nil {
		return nil, fmt.Errorf("encode arguments of %s: %w", method, err)
	}
	return &Request{
		Method:    method,
		Args:      a,
		Version:   c.target.Version,
		Namespace: c.target.Namespace,
		UniqueID:  NewUniqueID(),
		Context:   rctx,
	}, nil
}

// route returns the exchange and routing key of the target, as oslo's
// driver computes them.
func (c *Client) route() (exchange, key string) {
	if c.target.Fanout {
		return c.target.Topic + "_fanout", ""
	}
	exchange = c.target.Exchange
	if exchange == "" {
		exchange = c.t.exchange
	}
	key = c.target.Topic
	if c.target.Server != "" {
		key += "." + c.target.Server
	}
	return exchange, key
}

func (c *Client) describe() string {
	exchange, key := c.route()
	if key == "" {
		return "exchange " + exchange
	}
	return "topic " + key
}

// encodeArgs turns keyword arguments (a struct or map) into the args object.
func encodeArgs(args any) (map[string]json.RawMessage, error) {
	if args == nil {
		return map[string]json.RawMessage{}, nil
	}
	if m, ok := args.(map[string]json.RawMessage); ok {
		return m, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return map[string]json.RawMessage{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, errors.New("arguments must encode as a JSON object of keyword arguments")
	}
	return m, nil
}

// replyWaiter is the transport's one reply queue (reply_<uuid>, a new
// name on every connection) and the table of calls waiting on it.
type replyWaiter struct {
	t    *Transport
	done chan struct{} // closed by close

	mu        sync.Mutex
	queue     string // the current connection's reply queue
	started   bool
	stop      context.CancelFunc
	stopped   chan struct{}
	connected bool
	lost      chan struct{} // closed when the current connection is lost
	attempted chan struct{} // closed after the first connection attempt
	lastErr   error
	waiters   map[string]chan replyMsg
	closed    bool
}

// replyMsg is a decoded reply, or the reason a reply meant for the call
// was unusable (wrapping ErrInvalidReply).
type replyMsg struct {
	r   *Reply
	err error
}

func newReplyWaiter(t *Transport) *replyWaiter {
	return &replyWaiter{
		t:         t,
		done:      make(chan struct{}),
		attempted: make(chan struct{}),
		lost:      make(chan struct{}),
		waiters:   map[string]chan replyMsg{},
	}
}

// ensure starts the reply consumer if needed and returns a channel closed
// when its current connection is lost, and the reply queue of that
// connection. It fails fast when the broker is unreachable.
func (w *replyWaiter) ensure(ctx context.Context) (<-chan struct{}, string, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, "", ErrClosed
	}
	if !w.started {
		w.started = true
		runCtx, cancel := context.WithCancel(context.Background())
		w.stop = cancel
		w.stopped = make(chan struct{})
		go func() {
			defer close(w.stopped)
			w.t.consumeLoop(runCtx, consumer{
				purpose: "reply",
				setup:   w.setup,
				handle:  w.handle,
				up:      w.up,
				down:    w.down,
			})
		}()
	}
	attempted := w.attempted
	w.mu.Unlock()

	select {
	case <-attempted:
	case <-ctx.Done():
		return nil, "", fmt.Errorf("wait for reply queue: %w", ctx.Err())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.connected {
		return nil, "", fmt.Errorf("reply queue unavailable: %w", w.lastErr)
	}
	return w.lost, w.queue, nil
}

func (w *replyWaiter) setup(cc *consumeConn) (<-chan amqp.Delivery, error) {
	// Exclusive, unlike oslo's: no other connection, whatever its
	// permissions, can consume, purge or delete the replies to our calls,
	// although every server we call learns the queue's name. Calls in
	// flight fail when the connection goes anyway, and servers publish to
	// it as to any queue. A new name per connection: the broker may hold
	// the old one for a dead connection until its heartbeat times out.
	q := "reply_" + NewUniqueID()
	if _, err := cc.ch.QueueDeclare(q, false, false, true, false, w.t.opts.TransientQueueArguments()); err != nil {
		return nil, fmt.Errorf("declare reply queue: %w", err)
	}
	d, err := cc.ch.Consume(q, "", true, false, false, false, w.t.opts.ConsumerArguments())
	if err != nil {
		return nil, fmt.Errorf("consume reply queue: %w", err)
	}
	w.mu.Lock()
	w.queue = q
	w.mu.Unlock()
	return d, nil
}

func (w *replyWaiter) up() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.connected = true
	w.lastErr = nil
	w.lost = make(chan struct{})
	select {
	case <-w.attempted:
	default:
		close(w.attempted)
	}
}

func (w *replyWaiter) down(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.connected {
		close(w.lost)
	}
	w.connected = false
	w.lastErr = err
	select {
	case <-w.attempted:
	default:
		close(w.attempted)
	}
}

func (w *replyWaiter) handle(d amqp.Delivery) {
	// The size is checked before anything is decoded.
	err := w.t.checkSize(d.Body)
	var r *Reply
	if err == nil {
		r, err = DecodeReply(d.Body)
	}
	if err != nil {
		w.t.log.Warn("dropping unusable reply", "error", err, "bytes", len(d.Body))
		// Fail the calls the reply names at once: their server answered,
		// so waiting for the timeout would report the wrong thing.
		for _, id := range salvageMsgIDs(d.Body) {
			w.deliver(id, replyMsg{err: fmt.Errorf("%w: %w", ErrInvalidReply, err)})
		}
		return
	}
	w.deliver(r.MsgID, replyMsg{r: r})
}

func (w *replyWaiter) deliver(msgID string, m replyMsg) {
	w.mu.Lock()
	ch := w.waiters[msgID]
	w.mu.Unlock()
	if ch == nil {
		// The caller gave up (timeout) or the reply is a stray.
		return
	}
	select {
	case ch <- m:
	default:
		w.t.log.Warn("dropping reply: caller not keeping up", "msg_id", msgID)
	}
}

func (w *replyWaiter) register(msgID string) <-chan replyMsg {
	ch := make(chan replyMsg, 16)
	w.mu.Lock()
	w.waiters[msgID] = ch
	w.mu.Unlock()
	return ch
}

func (w *replyWaiter) unregister(msgID string) {
	w.mu.Lock()
	delete(w.waiters, msgID)
	w.mu.Unlock()
}

func (w *replyWaiter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.done)
	stop, stopped := w.stop, w.stopped
	w.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
}
