package oslo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors callers branch on. Remote failures are returned as *RemoteError.
var (
	// ErrTimeout means no final reply arrived before the call's deadline
	// (oslo's MessagingTimeout).
	ErrTimeout = errors.New("messaging timeout")
	// ErrConnection means the broker could not be reached, or the
	// connection was lost while a call was waiting for its reply.
	ErrConnection = errors.New("message broker connection failed")
	// ErrClosed means the transport was closed.
	ErrClosed = errors.New("transport closed")
	// errReturned is a mandatory publish the broker could not route.
	errReturned = errors.New("message returned unroutable")
)

// DefaultControlExchange is the exchange Trustpool's own topics live on
// when [DEFAULT] control_exchange is not set.
const DefaultControlExchange = "trustpool"

// Config configures a Transport.
type Config struct {
	// TransportURL is the oslo [DEFAULT] transport_url.
	TransportURL string
	// ControlExchange is the oslo [DEFAULT] control_exchange.
	ControlExchange string
	// Rabbit holds [oslo_messaging_rabbit]; query options of TransportURL
	// override it. The zero value means DefaultRabbitOptions.
	Rabbit *RabbitOptions
	// Logger receives connection events. Nil discards them.
	Logger *slog.Logger
	// MaxMessageSize bounds the body of every message this transport's
	// servers, listeners and reply consumer receive, in bytes; larger ones
	// are dropped before they are decoded. 0 means DefaultMaxMessageSize.
	MaxMessageSize int
}

// Transport owns the broker connections of one process: a publishing
// connection with a pool of confirm-mode channels, and a lazily started reply
// consumer for RPC calls. Servers and listeners open their own connections,
// as oslo does, so a slow consumer never stalls publishing.
type Transport struct {
	url      *TransportURL
	opts     RabbitOptions
	exchange string
	log      *slog.Logger
	connName string
	// maxMessageSize bounds received bodies (see Config.MaxMessageSize).
	maxMessageSize int

	hostMu   sync.Mutex
	hosts    []Host // shuffled once, as oslo does
	nextHost int

	pubMu   sync.Mutex
	pubConn *amqp.Connection
	pubFree []*pubChannel
	closed  bool

	declMu   sync.Mutex
	declared map[string]*amqp.Connection // exchange/queue declared on which publishing connection

	replies *replyWaiter
}

// NewTransport parses the configuration. It does not connect: connections
// are made on first use and re-made after failures.
func NewTransport(cfg Config) (*Transport, error) {
	u, err := ParseTransportURL(cfg.TransportURL)
	if err != nil {
		return nil, fmt.Errorf("parse transport_url: %w", err)
	}
	opts := DefaultRabbitOptions()
	if cfg.Rabbit != nil {
		opts = *cfg.Rabbit
	}
	if err := u.ApplyOptions(&opts); err != nil {
		return nil, fmt.Errorf("apply transport_url options: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("validate rabbit options: %w", err)
	}
	maxSize := cfg.MaxMessageSize
	switch {
	case maxSize < 0:
		return nil, fmt.Errorf("max message size %d: %w: must not be negative", maxSize, ErrInvalidOption)
	case maxSize == 0:
		maxSize = DefaultMaxMessageSize
	}
	exchange := cfg.ControlExchange
	if exchange == "" {
		exchange = DefaultControlExchange
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hosts := append([]Host(nil), u.Hosts...)
	// Load spreading, as oslo's random.shuffle: no security decision rests on it.
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] }) //nolint:gosec // G404: not security-relevant
	t := &Transport{
		url:            u,
		opts:           opts,
		exchange:       exchange,
		log:            log,
		hosts:          hosts,
		declared:       map[string]*amqp.Connection{},
		maxMessageSize: maxSize,
		connName:       fmt.Sprintf("%s:%d:%s", filepath.Base(os.Args[0]), os.Getpid(), NewUniqueID()),
	}
	t.replies = newReplyWaiter(t)
	return t, nil
}

// ControlExchange is the exchange targets without one use.
func (t *Transport) ControlExchange() string { return t.exchange }

// Close closes the publishing connection and stops the reply consumer.
// Calls still waiting fail with ErrClosed.
func (t *Transport) Close() error {
	t.pubMu.Lock()
	t.closed = true
	conn := t.pubConn
	t.pubConn, t.pubFree = nil, nil
	t.pubMu.Unlock()
	t.replies.close()
	if conn != nil {
		if err := conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			return fmt.Errorf("close publishing connection: %w", err)
		}
	}
	return nil
}

// connect dials the hosts in failover order, one round, and returns the
// first connection that succeeds. purpose names the connection in the
// broker's connection list.
func (t *Transport) connect(ctx context.Context, purpose string) (*amqp.Connection, error) {
	t.hostMu.Lock()
	start := t.nextHost
	t.hostMu.Unlock()
	var errs []error
	for i := range t.hosts {
		idx := (start + i) % len(t.hosts)
		h := t.hosts[idx]
		conn, err := t.dialHost(ctx, h, purpose)
		if err == nil {
			t.hostMu.Lock()
			t.nextHost = idx
			t.hostMu.Unlock()
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", net.JoinHostPort(h.Hostname, strconv.Itoa(h.Port)), err))
		if ctx.Err() != nil {
			break
		}
	}
	// The next attempt starts at the host after the one that failed first
	// (round-robin), or at a random one (shuffle), as kombu_failover_strategy says.
	t.hostMu.Lock()
	if t.opts.KombuFailoverStrategy == "shuffle" {
		t.nextHost = rand.IntN(len(t.hosts)) //nolint:gosec // G404: failover order is not security-relevant
	} else {
		t.nextHost = (start + 1) % len(t.hosts)
	}
	t.hostMu.Unlock()
	return nil, fmt.Errorf("%w: %w", ErrConnection, errors.Join(errs...))
}

func (t *Transport) dialHost(ctx context.Context, h Host, purpose string) (*amqp.Connection, error) {
	scheme := "amqp"
	var tlsCfg *tls.Config
	if t.opts.SSL {
		scheme = "amqps"
		c, err := t.opts.TLSConfig(h.Hostname)
		if err != nil {
			return nil, fmt.Errorf("tls config: %w", err)
		}
		tlsCfg = c
	}
	vhost := t.url.VirtualHost
	if vhost == "" {
		vhost = "/"
	}
	uri := amqp.URI{Scheme: scheme, Host: h.Hostname, Port: h.Port, Username: h.Username, Password: h.Password, Vhost: vhost}
	if uri.Username == "" {
		uri.Username, uri.Password = "guest", "guest"
	}
	var sasl []amqp.Authentication
	switch t.opts.RabbitLoginMethod {
	case "PLAIN":
		sasl = []amqp.Authentication{&amqp.PlainAuth{Username: uri.Username, Password: uri.Password}}
	case "EXTERNAL":
		sasl = []amqp.Authentication{&amqp.ExternalAuth{}}
	default:
		sasl = []amqp.Authentication{&amqp.AMQPlainAuth{Username: uri.Username, Password: uri.Password}}
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		if rem := time.Until(d); rem < timeout {
			timeout = rem
		}
	}
	if timeout <= 0 {
		return nil, ctx.Err()
	}
	deadline := time.Now().Add(timeout)
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(t.connName + ":" + purpose)
	props["product"] = "trustpool"
	cfg := amqp.Config{
		SASL:            sasl,
		Vhost:           vhost,
		Heartbeat:       time.Duration(t.opts.HeartbeatTimeoutThreshold) * time.Second,
		TLSClientConfig: tlsCfg,
		Properties:      props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The deadline covers the TLS and AMQP handshakes; amqp091
			// clears it once heartbeating starts.
			if err := conn.SetDeadline(deadline); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		},
	}
	return amqp.DialConfig(uri.String(), cfg)
}

// pubChannel is a confirm-mode channel on the publishing connection, used by
// one publisher at a time.
type pubChannel struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
}

// getChannel returns a free publishing channel, connecting if needed.
func (t *Transport) getChannel(ctx context.Context) (*pubChannel, error) {
	t.pubMu.Lock()
	if t.closed {
		t.pubMu.Unlock()
		return nil, ErrClosed
	}
	for len(t.pubFree) > 0 {
		pc := t.pubFree[len(t.pubFree)-1]
		t.pubFree = t.pubFree[:len(t.pubFree)-1]
		if !pc.ch.IsClosed() && pc.conn == t.pubConn {
			t.pubMu.Unlock()
			return pc, nil
		}
	}
	conn := t.pubConn
	t.pubMu.Unlock()

	if conn == nil || conn.IsClosed() {
		c, err := t.connect(ctx, "send")
		if err != nil {
			return nil, err
		}
		t.pubMu.Lock()
		switch {
		case t.closed:
			t.pubMu.Unlock()
			_ = c.Close()
			return nil, ErrClosed
		case t.pubConn != nil && !t.pubConn.IsClosed():
			// Another publisher reconnected first; use its connection.
			_ = c.Close()
		default:
			t.pubConn = c
			t.pubFree = nil
			t.log.Info("broker connected", "purpose", "send", "transport_url", t.url.Redacted())
		}
		conn = t.pubConn
		t.pubMu.Unlock()
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: open channel: %w", ErrConnection, err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: enable publisher confirms: %w", ErrConnection, err)
	}
	pc := &pubChannel{conn: conn, ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 8))}
	return pc, nil
}

func (t *Transport) putChannel(pc *pubChannel) {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	if t.closed || pc.ch.IsClosed() || pc.conn != t.pubConn || len(t.pubFree) >= 64 {
		_ = pc.ch.Close()
		return
	}
	t.pubFree = append(t.pubFree, pc)
}

// publishing is one message to publish.
type publishing struct {
	exchange   string
	key        string
	mandatory  bool
	body       []byte
	expiration time.Duration // calls only
	// declare, when set, runs on the channel before the first publish to
	// this exchange on a connection.
	declare func(ch *amqp.Channel) error
	// declareKey identifies what declare declares.
	declareKey string
}

// publish sends one message and waits for the broker's confirm. A mandatory
// message the broker could not route returns errReturned.
func (t *Transport) publish(ctx context.Context, p publishing) error {
	pc, err := t.getChannel(ctx)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if ok {
			t.putChannel(pc)
		} else {
			_ = pc.ch.Close()
		}
	}()
	if p.declare != nil && !t.isDeclared(p.declareKey, pc.conn) {
		if err := p.declare(pc.ch); err != nil {
			return fmt.Errorf("declare %s: %w", p.declareKey, err)
		}
		t.setDeclared(p.declareKey, pc.conn)
	}
	for len(pc.returns) > 0 {
		<-pc.returns
	}
	msg := amqp.Publishing{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		DeliveryMode:    amqp.Persistent,
		Headers:         amqp.Table{},
		Body:            p.body,
	}
	if p.expiration > 0 {
		msg.Expiration = strconv.FormatInt(p.expiration.Milliseconds(), 10)
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, p.key, p.mandatory, false, msg)
	if err != nil {
		return fmt.Errorf("%w: publish: %w", ErrConnection, err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("wait for publish confirm: %w", err)
	}
	select {
	case <-pc.returns:
		ok = true
		return errReturned
	default:
	}
	if !acked {
		if pc.ch.IsClosed() {
			return fmt.Errorf("%w: publish not confirmed: channel closed", ErrConnection)
		}
		ok = true
		return errors.New("publish rejected by broker")
	}
	ok = true
	return nil
}

func (t *Transport) isDeclared(key string, conn *amqp.Connection) bool {
	t.declMu.Lock()
	defer t.declMu.Unlock()
	return t.declared[key] == conn
}

func (t *Transport) setDeclared(key string, conn *amqp.Connection) {
	t.declMu.Lock()
	defer t.declMu.Unlock()
	t.declared[key] = conn
}

// declareControlExchange declares a topic exchange with the flags oslo
// uses, so we coexist with Python services declaring the same exchange.
func (t *Transport) declareTopicExchange(ch *amqp.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, t.opts.Durable(), t.opts.AMQPAutoDelete, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", name, err)
	}
	return nil
}

func declareFanoutExchange(ch *amqp.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", name, err)
	}
	return nil
}

// backoff yields oslo's reconnect delays: rabbit_retry_interval, growing by
// rabbit_retry_backoff each attempt, capped at rabbit_interval_max.
type backoff struct {
	opts    *RabbitOptions
	attempt int
}

func (b *backoff) next() time.Duration {
	d := time.Duration(float64(time.Second) * (float64(b.opts.RabbitRetryInterval) + float64(b.attempt)*float64(b.opts.RabbitRetryBackoff)))
	if max := time.Duration(b.opts.RabbitIntervalMax) * time.Second; d > max {
		d = max
	}
	b.attempt++
	return d
}

func (b *backoff) reset() { b.attempt = 0 }

// sleepCtx waits d or until ctx is done, reporting whether it waited fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// consumeConn is a dedicated consuming connection with one channel, as
// oslo gives every server and listener.
type consumeConn struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	done chan struct{} // closed by close
	once sync.Once
}

func (c *consumeConn) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.conn.Close()
	})
}

// openConsumer connects and opens a channel with the configured prefetch.
func (t *Transport) openConsumer(ctx context.Context, purpose string) (*consumeConn, error) {
	conn, err := t.connect(ctx, purpose)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%w: open channel: %w", ErrConnection, err)
	}
	if n := t.opts.RabbitQosPrefetchCount; n > 0 {
		if err := ch.Qos(n, 0, false); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("set prefetch: %w", err)
		}
	}
	return &consumeConn{conn: conn, ch: ch, done: make(chan struct{})}, nil
}

// consumer describes a consuming connection's life cycle for consumeLoop.
type consumer struct {
	purpose string
	// setup declares what is needed and starts consuming.
	setup func(*consumeConn) (<-chan amqp.Delivery, error)
	// handle processes one delivery.
	handle func(amqp.Delivery)
	// up runs after each successful setup; down after each failed attempt
	// or lost connection.
	up   func()
	down func(error)
	// teardown runs on a graceful stop, before the connection closes.
	teardown func(*consumeConn)
	// refresh, when set, runs every declarationRefresh while connected:
	// it declares and binds again what setup did, so exchanges and
	// bindings another client deleted come back. An error reconnects.
	refresh func(*consumeConn) error
}

// declarationRefresh is how often consumers re-declare their exchanges,
// queues and bindings. Anyone allowed to declare an exchange (which every
// oslo client of it must be) may also delete it, taking every binding with
// it; the server would otherwise never receive another message.
var declarationRefresh = 30 * time.Second

// consumeLoop keeps a consuming connection up until ctx is done: it
// connects with oslo's backoff, declares and consumes, then hands
// deliveries to the handler until the connection drops, and starts over.
func (t *Transport) consumeLoop(ctx context.Context, c consumer) {
	b := backoff{opts: &t.opts}
	for {
		cc, err := t.openConsumer(ctx, c.purpose)
		var deliveries <-chan amqp.Delivery
		if err == nil {
			deliveries, err = c.setup(cc)
			if err != nil {
				cc.close()
			}
		}
		if err != nil {
			if c.down != nil {
				c.down(err)
			}
			if ctx.Err() != nil {
				return
			}
			d := b.next()
			t.log.Warn("broker unavailable, retrying", "purpose", c.purpose, "error", err, "retry_in", d.String())
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		b.reset()
		t.log.Info("broker connected", "purpose", c.purpose, "transport_url", t.url.Redacted())
		closed := cc.conn.NotifyClose(make(chan *amqp.Error, 1))
		if c.up != nil {
			c.up()
		}
		lost := false
		var refresh <-chan time.Time
		var tk *time.Ticker
		if c.refresh != nil {
			tk = time.NewTicker(declarationRefresh)
			refresh = tk.C
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-refresh:
				if err := c.refresh(cc); err != nil {
					lost = true
					t.log.Warn("re-declaring exchanges and bindings failed, reconnecting", "purpose", c.purpose, "error", err)
					break loop
				}
			case d, ok := <-deliveries:
				if !ok {
					lost = true
					break loop
				}
				c.handle(d)
			case amqpErr := <-closed:
				lost = true
				if amqpErr != nil {
					t.log.Warn("broker closed the connection", "purpose", c.purpose, "code", amqpErr.Code, "reason", amqpErr.Reason)
				}
				break loop
			}
		}
		if tk != nil {
			tk.Stop()
		}
		if !lost {
			if c.teardown != nil {
				c.teardown(cc)
			}
			cc.close()
			return
		}
		cc.close()
		if c.down != nil {
			c.down(fmt.Errorf("%w: connection lost", ErrConnection))
		}
		t.log.Warn("broker connection lost, reconnecting", "purpose", c.purpose)
		// oslo sleeps kombu_reconnect_delay after a recoverable error.
		if !sleepCtx(ctx, time.Duration(t.opts.KombuReconnectDelay*float64(time.Second))) {
			return
		}
	}
}
