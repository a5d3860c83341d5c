package oslo

import (
	"context"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Notifier sends notifications with oslo's messagingv2 driver: the
// envelope, routing key <topic>.<priority> on the control exchange, and
// the <topic>.<priority> queue declared by the publisher so nothing is lost
// before a consumer exists.
type Notifier struct {
	t           *Transport
	publisherID string
	topics      []string
}

// NewNotifier returns a notifier publishing as publisherID to topics
// (oslo's default topic is "notifications").
func NewNotifier(tr *Transport, publisherID string, topics ...string) *Notifier {
	if len(topics) == 0 {
		topics = []string{"notifications"}
	}
	return &Notifier{t: tr, publisherID: publisherID, topics: topics}
}

// Notify sends one notification to every topic. The request context
// travels as _context_* keys with auth_token removed, as oslo's sanitiser
// does.
func (n *Notifier) Notify(ctx context.Context, rctx map[string]any, priority, eventType string, payload any) error {
	upper, err := NormalizePriority(priority)
	if err != nil {
		return fmt.Errorf("notify %s: %w", eventType, err)
	}
	prio := strings.ToLower(upper)
	raw, err := marshalJSON(payload)
	if err != nil {
		return fmt.Errorf("notify %s: encode payload: %w", eventType, err)
	}
	sanitized := make(map[string]any, len(rctx))
	for k, v := range rctx {
		sanitized[k] = v
	}
	if _, ok := sanitized["auth_token"]; ok {
		sanitized["auth_token"] = nil
	}
	msgID := NewMessageID()
	ts := PythonTimestamp(time.Now())
	o := &n.t.opts
	exchange := n.t.exchange
	for _, topic := range n.topics {
		body, err := EncodeNotification(&Notification{
			MessageID:   msgID,
			PublisherID: n.publisherID,
			EventType:   eventType,
			Priority:    upper,
			Payload:     raw,
			Timestamp:   ts,
			UniqueID:    NewUniqueID(),
			Context:     sanitized,
		})
		if err != nil {
			return fmt.Errorf("notify %s: encode: %w", eventType, err)
		}
		queue := topic + "." + prio
		err = n.t.publish(ctx, publishing{
			exchange: exchange, key: queue, body: body,
			declareKey: "notify:" + exchange + ":" + queue,
			declare: func(ch *amqp.Channel) error {
				if err := n.t.declareTopicExchange(ch, exchange); err != nil {
					return err
				}
				if _, err := ch.QueueDeclare(queue, o.Durable(), o.AMQPAutoDelete, false, false, o.QueueArguments()); err != nil {
					return fmt.Errorf("declare queue %q: %w", queue, err)
				}
				if err := ch.QueueBind(queue, queue, exchange, false, nil); err != nil {
					return fmt.Errorf("bind queue %q: %w", queue, err)
				}
				return nil
			},
		})
		if err != nil {
			return fmt.Errorf("notify %s to %s: %w", eventType, queue, err)
		}
	}
	return nil
}
