package oslo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Handler runs one RPC method. It returns a JSON-encodable result, or an
// error sent back to the caller as a failure (see FailureFromError; return
// a *RemoteError such as NewValueError to choose the Python class).
type Handler func(ctx context.Context, req *Request) (any, error)

// Endpoint is a set of methods under one namespace and API version, like an
// oslo endpoint object with its target.
type Endpoint struct {
	// Namespace must equal the request's namespace ("" = none).
	Namespace string
	// Version is the endpoint's API version; "" means "1.0".
	Version string
	// Methods maps method names to handlers. Names starting with "_" are
	// never dispatched (oslo's DefaultRPCAccessPolicy).
	Methods map[string]Handler
}

// executorPoolSize bounds concurrent handlers, like oslo's
// executor_thread_pool_size.
const executorPoolSize = 64

// dedupSize is how many recent _unique_id values a server remembers (oslo
// keeps 16).
const dedupSize = 256

// Server is an RPC server: it consumes the target's topic queue, its
// topic.server queue and a private queue on the topic's fanout exchange,
// acknowledges each request before dispatching it (at-most-once, as oslo)
// and replies to calls.
type Server struct {
	t         *Transport
	target    Target
	endpoints []Endpoint
	log       *slog.Logger
	fanoutQ   string
	ready     chan struct{}
	readyOnce sync.Once

	dedup *recentIDs
	gone  *goneQueues
}

// NewServer returns a server for target (Topic required; Server names this
// instance, normally the host name).
func NewServer(tr *Transport, target Target, endpoints ...Endpoint) *Server {
	return &Server{
		t:         tr,
		target:    target,
		endpoints: endpoints,
		log:       tr.log.With("topic", target.Topic, "server", target.Server),
		fanoutQ:   target.Topic + "_fanout_" + NewUniqueID(),
		ready:     make(chan struct{}),
		dedup:     newRecentIDs(dedupSize),
		gone:      &goneQueues{m: map[string]time.Time{}},
	}
}

// Ready is closed once the server first consumes from the broker.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx is done, reconnecting whenever the broker goes away.
// Handlers still running when ctx ends are waited for.
func (s *Server) Run(ctx context.Context) error {
	if s.target.Topic == "" {
		return errors.New("rpc server: target has no topic")
	}
	if s.target.Fanout {
		return errors.New("rpc server: target must not be a fanout target")
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, executorPoolSize)
	s.t.consumeLoop(ctx, consumer{
		purpose: "rpc-server:" + s.target.Topic,
		setup:   s.setup,
		handle: func(d amqp.Delivery) {
			s.handleBounded(ctx, d, sem, &wg)
		},
		up: func() { s.readyOnce.Do(func() { close(s.ready) }) },
		refresh: func(cc *consumeConn) error {
			_, err := s.declare(cc.ch)
			return err
		},
		teardown: func(cc *consumeConn) {
			// oslo deletes its own fanout queue when it stops.
			if _, err := cc.ch.QueueDelete(s.fanoutQ, false, false, false); err != nil {
				s.log.Warn("delete fanout queue failed", "queue", s.fanoutQ, "error", err)
			}
		},
	})
	wg.Wait()
	return nil
}

// declare declares the server's exchanges and queues and binds them; it
// returns the queues to consume. It is idempotent: refresh runs it again.
func (s *Server) declare(ch *amqp.Channel) ([]string, error) {
	o := &s.t.opts
	exchange := s.target.Exchange
	if exchange == "" {
		exchange = s.t.exchange
	}
	if err := s.t.declareTopicExchange(ch, exchange); err != nil {
		return nil, err
	}
	queues := []string{s.target.Topic}
	if s.target.Server != "" {
		queues = append(queues, s.target.Topic+"."+s.target.Server)
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, o.Durable(), o.AMQPAutoDelete, false, false, o.QueueArguments()); err != nil {
			return nil, fmt.Errorf("declare queue %q: %w", q, err)
		}
		if err := ch.QueueBind(q, q, exchange, false, nil); err != nil {
			return nil, fmt.Errorf("bind queue %q: %w", q, err)
		}
	}
	fanoutEx := s.target.Topic + "_fanout"
	if err := declareFanoutExchange(ch, fanoutEx); err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(s.fanoutQ, false, false, false, false, o.TransientQueueArguments()); err != nil {
		return nil, fmt.Errorf("declare queue %q: %w", s.fanoutQ, err)
	}
	if err := ch.QueueBind(s.fanoutQ, s.target.Topic, fanoutEx, false, nil); err != nil {
		return nil, fmt.Errorf("bind queue %q: %w", s.fanoutQ, err)
	}
	return append(queues, s.fanoutQ), nil
}

func (s *Server) setup(cc *consumeConn) (<-chan amqp.Delivery, error) {
	ch, o := cc.ch, &s.t.opts
	queues, err := s.declare(ch)
	if err != nil {
		return nil, err
	}
	consumerArgs := o.ConsumerArguments()
	merged := make(chan amqp.Delivery)
	var wg sync.WaitGroup
	for _, q := range queues {
		d, err := ch.Consume(q, "", false, false, false, false, consumerArgs)
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
		}()
	}
	go func() { wg.Wait(); close(merged) }()
	return merged, nil
}

// handleBounded accepts d and runs the work it causes (the dispatch, or
// the failure reply to a message that could not be used) under the
// executor bound sem, tracked by wg so that Run waits for it.
func (s *Server) handleBounded(ctx context.Context, d amqp.Delivery, sem chan struct{}, wg *sync.WaitGroup) {
	var job func()
	switch req, rej := s.accept(d); {
	case req != nil:
		job = func() { s.dispatch(ctx, req) }
	case rej != nil:
		job = func() { s.replyRejected(ctx, rej) }
	default:
		return
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-sem }()
		job()
	}()
}

// rejection is a call that could not be used but whose reply address
// could be read: its caller is told why instead of waiting for its timeout.
type rejection struct {
	req *Request
	err error
}

// accept acknowledges a delivery and decodes it. Messages oslo would
// reject (no content type, bad envelope, duplicates) and messages larger
// than the transport's limit are dropped; for a dropped call whose reply
// address is readable it returns a rejection to answer.
func (s *Server) accept(d amqp.Delivery) (*Request, *rejection) {
	// Acknowledge before dispatch: at-most-once, as oslo.
	if err := d.Ack(false); err != nil {
		s.log.Warn("ack failed, dropping request", "error", err)
		return nil, nil
	}
	if d.ContentType != "application/json" {
		s.log.Warn("dropping message without application/json content type", "content_type", d.ContentType)
		return nil, nil
	}
	if d.Exchange == "" {
		// oslo clients send requests through the topic and fanout
		// exchanges; the default exchange reaches any queue by name, past
		// the broker's per-user topic permissions.
		s.log.Warn("dropping request sent through the default exchange", "routing_key", d.RoutingKey)
		return nil, nil
	}
	// The size is checked before anything is decoded.
	err := s.t.checkSize(d.Body)
	var req *Request
	if err == nil {
		req, err = DecodeRequest(d.Body)
	}
	if err != nil {
		s.log.Warn("dropping unusable message", "error", err, "bytes", len(d.Body))
		// A Python caller waits for a reply until its timeout; when the
		// reply address can still be read, tell it what was wrong instead
		// (Python's json writes NaN and Infinity, which JSON cannot carry).
		if msgID, replyQ, ok := salvageReplyAddress(d.Body); ok {
			return nil, &rejection{req: &Request{IsCall: true, MsgID: msgID, ReplyQ: replyQ}, err: err}
		}
		return nil, nil
	}
	if req.UniqueID != "" && !s.dedup.add(req.UniqueID) {
		s.log.Info("ignoring duplicate message", "unique_id", req.UniqueID, "method", req.Method)
		return nil, nil
	}
	return req, nil
}

func (s *Server) dispatch(ctx context.Context, req *Request) {
	log := s.log.With("method", req.Method)
	if rid, ok := req.Context["request_id"].(string); ok {
		log = log.With("request_id", rid)
	}
	var stopMonitor func()
	if req.IsCall && req.ReplyQ != "" && req.Timeout != nil && *req.Timeout > 0 {
		stopMonitor = s.keepAlive(ctx, req, time.Duration(*req.Timeout*float64(time.Second)/2))
	}
	result, failure := s.invoke(ctx, req)
	if stopMonitor != nil {
		stopMonitor()
	}
	if failure != nil {
		log.Info("rpc method failed", "class", failure.Class, "module", failure.Module)
	}
	if !req.IsCall || req.ReplyQ == "" {
		return
	}
	if err := s.reply(ctx, req, &Reply{Result: result, Failure: failure, Ending: true}); err != nil {
		log.Warn("reply failed", "error", err, "reply_q", req.ReplyQ)
	}
}

// invoke finds the handler as oslo's dispatcher does and runs it.
func (s *Server) invoke(ctx context.Context, req *Request) (result json.RawMessage, failure *Failure) {
	version := req.Version
	if version == "" {
		version = "1.0"
	}
	var h Handler
	compatible := false
	for _, ep := range s.endpoints {
		epVersion := ep.Version
		if epVersion == "" {
			epVersion = "1.0"
		}
		if ep.Namespace != req.Namespace || !VersionCompatible(epVersion, version) {
			continue
		}
		compatible = true
		if fn, ok := ep.Methods[req.Method]; ok && !strings.HasPrefix(req.Method, "_") {
			h = fn
			break
		}
	}
	if h == nil {
		if compatible {
			return nil, NoSuchMethod(req.Method)
		}
		return nil, UnsupportedVersion(version, req.Method)
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("rpc handler panicked", "method", req.Method, "panic", fmt.Sprint(r))
			result, failure = nil, FailureFromError(fmt.Errorf("internal error in %s", req.Method))
		}
	}()
	v, err := h(ctx, req)
	if err != nil {
		return nil, FailureFromError(err)
	}
	raw, err := marshalJSON(v)
	if err != nil {
		return nil, FailureFromError(fmt.Errorf("encode result of %s: %w", req.Method, err))
	}
	return raw, nil
}

// keepAlive sends ending=false replies every interval until stopped, so a
// caller using call_monitor_timeout knows the method is still running.
func (s *Server) keepAlive(ctx context.Context, req *Request, interval time.Duration) func() {
	if interval < 100*time.Millisecond {
		interval = 100 * time.Millisecond
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tk.C:
				if err := s.reply(ctx, req, &Reply{Ending: false}); err != nil {
					s.log.Warn("keep-alive failed", "error", err)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// reply publishes r to the caller's reply queue on the default exchange.
// When the queue does not exist (yet), oslo retries for
// kombu_missing_consumer_retry_timeout and then forgets the queue for a
// while; so do we.
func (s *Server) reply(ctx context.Context, req *Request, r *Reply) error {
	return s.publishReply(ctx, req, r, time.Duration(s.t.opts.KombuMissingConsumerRetryTimeout)*time.Second)
}

// publishReply sends r, retrying for up to retryMissing while the reply
// queue is missing (0: one attempt).
func (s *Server) publishReply(ctx context.Context, req *Request, r *Reply, retryMissing time.Duration) error {
	if s.gone.has(req.ReplyQ) {
		return fmt.Errorf("reply queue %s recently missing, reply dropped", req.ReplyQ)
	}
	r.MsgID = req.MsgID
	r.UniqueID = NewUniqueID()
	body, err := EncodeReply(r)
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	// A reply is still sent when the server is stopping; bound it instead.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), retryMissing+5*time.Second)
	defer cancel()
	deadline := time.Now().Add(retryMissing)
	for {
		err := s.t.publish(pctx, publishing{exchange: "", key: req.ReplyQ, mandatory: s.t.opts.DirectMandatoryFlag, body: body})
		if !errors.Is(err, errReturned) {
			return err
		}
		if !time.Now().Before(deadline) {
			s.gone.add(req.ReplyQ)
			return fmt.Errorf("reply queue %s missing for %s, reply dropped", req.ReplyQ, retryMissing)
		}
		// Waiting for a missing reply queue ends with the server: a caller
		// gone for good (its process killed) must not hold the stop for
		// kombu_missing_consumer_retry_timeout.
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return fmt.Errorf("reply queue %s missing and the server is stopping, reply dropped", req.ReplyQ)
		}
		if err := pctx.Err(); err != nil {
			return fmt.Errorf("reply to %s: %w", req.ReplyQ, err)
		}
	}
}

// replyRejected tells the caller of an unusable message why it was
// dropped. It makes one attempt: the address comes from a message that may
// not come from an oslo caller at all, and a real caller's reply queue
// exists before it sends.
func (s *Server) replyRejected(ctx context.Context, rej *rejection) {
	msg := fmt.Sprintf("request could not be decoded: %v", rej.err)
	if errors.Is(rej.err, ErrMessageTooLarge) {
		msg = fmt.Sprintf("request refused: %v", rej.err)
	}
	f := NewValueError(msg).Failure
	if err := s.publishReply(ctx, rej.req, &Reply{Failure: &f, Ending: true}, 0); err != nil {
		s.log.Warn("reply failed", "error", err, "reply_q", rej.req.ReplyQ)
	}
}

func marshalJSON(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// recentIDs remembers the last n ids.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add records id and reports whether it was new.
func (r *recentIDs) add(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.set[id]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
	return true
}

// goneQueues remembers reply queues found missing, for 60 s, at most 200.
type goneQueues struct {
	mu sync.Mutex
	m  map[string]time.Time
}

const goneTTL = 60 * time.Second

func (g *goneQueues) has(q string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.m[q]
	if ok && time.Since(t) > goneTTL {
		delete(g.m, q)
		return false
	}
	return ok
}

func (g *goneQueues) add(q string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.m) >= 200 {
		for k, t := range g.m {
			if time.Since(t) > goneTTL || len(g.m) >= 200 {
				delete(g.m, k)
			}
		}
	}
	g.m[q] = time.Now()
}

// seen reports whether id was recorded, without recording it.
func (r *recentIDs) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}
