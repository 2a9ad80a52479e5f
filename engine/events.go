package engine

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Events: the engine publishes what happens (runs starting and finishing,
// plan changes, models loaded, power samples) to subscribers. Publishing
// never blocks: each subscriber has a bounded buffer, and one that falls
// behind is dropped (its channel closed, Reason set); the engine never
// waits for it.

// Event is one published event.
type Event struct {
	Topic  string `json:"topic"`
	Method string `json:"method"` // the notification name, e.g. event.run.finished
	Params any    `json:"params"`
}

// DefaultEventBuffer is a subscription's buffer when none is given.
const DefaultEventBuffer = 1024

// Subscription receives events of its topics on C until it is closed or
// dropped.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	topics map[string]bool
	hub    *hub

	mu        sync.Mutex
	closed    bool
	reason    string
	delivered atomic.Int64
}

// Reason says why C was closed ("" while open): "closed", or why the
// subscriber was dropped.
func (s *Subscription) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Delivered counts the events put into C.
func (s *Subscription) Delivered() int64 { return s.delivered.Load() }

// Close ends the subscription.
func (s *Subscription) Close() { s.hub.remove(s, "closed") }

type hub struct {
	mu   sync.Mutex
	subs []*Subscription
	// power sampling: a poller runs while someone wants power events
	powerWanted func() bool
	pollPower   func(stop <-chan struct{})
	powerStop   chan struct{}
}

func (h *hub) add(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs = append(h.subs, s)
	if s.topics[TopicPower] && h.powerStop == nil && h.pollPower != nil {
		h.powerStop = make(chan struct{})
		go h.pollPower(h.powerStop)
	}
}

func (h *hub) remove(s *Subscription, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s, reason)
}

func (h *hub) removeLocked(s *Subscription, reason string) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.reason = reason
		close(s.c)
	}
	s.mu.Unlock()
	h.subs = slices.DeleteFunc(h.subs, func(x *Subscription) bool { return x == s })
	if h.powerStop != nil && !slices.ContainsFunc(h.subs, func(x *Subscription) bool { return x.topics[TopicPower] }) {
		close(h.powerStop)
		h.powerStop = nil
	}
}

func (h *hub) publish(topic, method string, params any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ev := Event{Topic: topic, Method: method, Params: params}
	for _, s := range slices.Clone(h.subs) {
		if !s.topics[topic] {
			continue
		}
		select {
		case s.c <- ev:
			s.delivered.Add(1)
		default:
			h.removeLocked(s, fmt.Sprintf("too slow: %d events were waiting", cap(s.c)))
		}
	}
}

func (h *hub) closeAll(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range slices.Clone(h.subs) {
		h.removeLocked(s, reason)
	}
}

// Subscribe returns a subscription to topics (empty: all). buffer bounds
// the events waiting to be read (0: DefaultEventBuffer); a subscriber that
// lets it fill is dropped.
func (e *Engine) Subscribe(topics []string, buffer int) (*Subscription, error) {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	if len(topics) == 0 {
		topics = Topics()
	}
	set := map[string]bool{}
	for _, t := range topics {
		if !slices.Contains(Topics(), t) {
			return nil, errorf(CodeInvalidParams, "invalid params: field \"topics\": unknown topic %q (known: %v)", t, Topics())
		}
		set[t] = true
	}
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, topics: set, hub: &e.events}
	e.events.add(s)
	return s, nil
}

func (e *Engine) publish(topic, method string, params any) { e.events.publish(topic, method, params) }

// pollPower publishes the energy sampler's new samples as
// event.power.sample while power subscribers exist.
func (e *Engine) pollPower(stop <-chan struct{}) {
	last := time.Now() // only samples taken from now on
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st := e.PowerStatus()
		for _, s := range st.Samples {
			if s.At.After(last) {
				last = s.At
				e.publish(TopicPower, EventPowerSample, PowerSampleEvent{PowerSample: s, Source: st.Source, CapWatts: st.CapWatts})
			}
		}
	}
}

// PowerSampleEvent is event.power.sample's params.
type PowerSampleEvent struct {
	PowerSample
	Source   string  `json:"source"`
	CapWatts float64 `json:"cap_watts"`
}
