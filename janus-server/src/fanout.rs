//! One publish, from the parsed request to every subscriber's socket.
//!
//! Follow a message through it:
//!
//! 1. [`publish`] takes **one** wall-clock timestamp (every subscriber gets
//!    the same one, protocol P6) and **one** latency stamp.
//! 2. The topic manager locks the topic and lends its subscriber list
//!    ([`janus_core::TopicManager::publish`]); holding that lock for the
//!    whole hand-out is what gives each topic a single order.
//! 3. The message takes the topic's next offset and, if history is kept, is
//!    added to the topic's history ([`crate::history::Stream`]), still under
//!    the lock, so offsets follow the one order subscribers see.
//! 4. The delivery is encoded **once per form** into a `Bytes` ([`Forms`]:
//!    the 2009 form, and the form with `"offset"` for clients that opted in);
//!    each subscriber gets a clone of its form (a reference-count increment)
//!    pushed onto its [`crate::outbound::Outbound`] side, which applies the
//!    per-client budget and the slow-consumer policy.
//! 5. A push that finds the subscriber's write token free claims it: that
//!    session goes on this publish's `ready` list, handed to the writer
//!    threads ([`crate::writer`]) in chunks while the loop still runs, so
//!    writing starts before a wide fan-out has finished queuing.
//! 6. After the topic is unlocked, [`Fanout::finish`] hands over the rest,
//!    deals with subscribers the budget cut off (they leave every topic and
//!    their connection task closes them), and updates the server's counters
//!    once for the whole publish.
//! 7. A writer thread takes each ready session and writes everything queued
//!    for it with one `writev` per up to 64 frames ([`crate::session::Session::flush`]).
//!
//! Per subscriber that is a `Bytes` clone, one uncontended lock, a queue
//! push and, when the subscriber was idle, a slot on the ready list: no
//! allocation, no serialization, no clock read, no lock held across a write.
//! Everything a publish needs is passed in [`Fanout`]: no thread-locals.

use std::sync::Arc;

use bytes::Bytes;
use janus_core::message::encode_delivery_at;
use janus_core::{ProtocolError, Publish, ServerMessage, Timestamp};

use crate::broker::BrokerMessage;
use crate::history::Stream;

use crate::metrics::{secs_now, stamp_now};
use crate::outbound::Push;
use crate::session::{CloseReason, Session, SessionHandle, Transport};
use crate::Shared;

/// Ready sessions collected before they are handed to the writers, so
/// writing starts while a large fan-out is still queuing.
const SCHEDULE_CHUNK: usize = 256;

/// Publishes exactly like a client `PUBLISH`: one timestamp, the topic's
/// next offset, one encoding per form, every subscriber of the topic.
/// Returns how many subscribers it reached.
pub fn publish(shared: &Shared, publish: &Publish) -> usize {
    let timestamp = Timestamp::now();
    let stamp = stamp_now();
    let now = secs_now();
    shared.writers.queue().publish_seen(stamp);
    let history = &shared.history;
    let mut fanout = Fanout::new(shared);
    // With history kept, a topic nobody subscribes to yet is created to keep it.
    let reached = shared
        .topics
        .publish(&publish.topic, history.enabled(), |subscribers, stream| {
            let offset = stream.take_offset();
            let forms = Forms::new(Fields::of(publish), timestamp, offset);
            fanout.hand_out(subscribers, stream, forms, (now, stamp))
        })
        .unwrap_or(0);
    fanout.finish(1);
    reached
}

/// In a cluster: delivers a message that came back from the broker to this
/// node's subscribers of its topic, exactly as [`publish`] does for a single
/// node, with the broker's timestamp and offset. `first` runs under the
/// topic's lock before the delivery (it answers subscribers that waited for
/// the topic's channel). A topic this node no longer has interest in is
/// skipped.
pub fn deliver_message(
    shared: &Shared,
    message: &BrokerMessage,
    first: impl FnOnce(&[(u64, SessionHandle)], &mut Stream),
) -> usize {
    let stamp = stamp_now();
    let now = secs_now();
    shared.writers.queue().publish_seen(stamp);
    let history = &shared.history;
    let mut fanout = Fanout::new(shared);
    let fields = Fields {
        topic: &message.topic,
        event: &message.event,
        message_id: &message.message_id,
        data: &message.data,
    };
    let reached = shared
        .topics
        .publish(&message.topic, false, |subscribers, stream| {
            if stream.interest.is_none() {
                return 0;
            }
            first(subscribers, stream);
            stream.follow(&message.epoch, message.offset, history);
            let forms = Forms::new(fields, message.timestamp, message.offset);
            fanout.hand_out(subscribers, stream, forms, (now, stamp))
        })
        .unwrap_or(0);
    fanout.finish(1);
    reached
}

/// The answer to a subscribe, queued under the topic's lock: `ACK`, or for
/// an offset client (X1) the topic's epoch and the offset it starts after.
pub(crate) fn subscribe_answer(session: &Session, topic: &str, stream: &mut Stream) -> Bytes {
    if session.offsets() {
        ServerMessage::Subscribed {
            timestamp: Timestamp::now(),
            topic: topic.to_owned(),
            epoch: stream.epoch().to_owned(),
            offset: stream.last(),
        }
        .to_bytes()
    } else {
        Bytes::from_static(b"ACK\x01")
    }
}

/// What a delivery says besides its timestamp and offset.
#[derive(Clone, Copy)]
struct Fields<'p> {
    topic: &'p str,
    event: &'p str,
    message_id: &'p str,
    data: &'p str,
}

impl<'p> Fields<'p> {
    fn of(publish: &'p Publish) -> Self {
        Self {
            topic: &publish.topic,
            event: &publish.event,
            message_id: &publish.message_id,
            data: publish.data.get(),
        }
    }
}

/// The encodings of one publish, each made at most once, when a subscriber
/// (or the history) first needs it: a delivery to 19,000 WebSocket
/// subscribers is one complete WebSocket frame, shared like the TCP bytes
/// (server frames are unmasked, so they are the same for every client).
struct Forms<'p> {
    publish: Fields<'p>,
    timestamp: Timestamp,
    offset: u64,
    /// The 2009 form (protocol P6), byte for byte what old clients expect.
    plain: Option<Bytes>,
    /// The form with `"offset"` last (X1).
    with_offset: Option<Bytes>,
    /// The WebSocket frames (X2) of `plain` and `with_offset`.
    ws_plain: Option<Bytes>,
    ws_with_offset: Option<Bytes>,
}

impl<'p> Forms<'p> {
    fn new(publish: Fields<'p>, timestamp: Timestamp, offset: u64) -> Self {
        Self {
            publish,
            timestamp,
            offset,
            plain: None,
            with_offset: None,
            ws_plain: None,
            ws_with_offset: None,
        }
    }

    /// The form for a client of `transport` that did (`offsets`) or did not
    /// opt in to offsets.
    fn get(&mut self, offsets: bool, transport: Transport) -> &Bytes {
        let (p, timestamp, offset) = (self.publish, self.timestamp, self.offset);
        let encode =
            |offset| encode_delivery_at(timestamp, p.topic, p.event, p.message_id, p.data, offset);
        let p1 = if offsets {
            self.with_offset.get_or_insert_with(|| encode(Some(offset)))
        } else {
            self.plain.get_or_insert_with(|| encode(None))
        };
        match transport {
            Transport::Tcp => p1,
            Transport::WebSocket => {
                let ws = if offsets {
                    &mut self.ws_with_offset
                } else {
                    &mut self.ws_plain
                };
                ws.get_or_insert_with(|| transport.frame(p1.clone()))
            }
        }
    }
}

/// Queues one delivery for one session (the admin API's unicast). Returns
/// whether it was queued.
pub fn send(shared: &Shared, session: &Arc<Session>, frame: &Bytes) -> bool {
    let mut fanout = Fanout::new(shared);
    let frame = session.transport.frame(frame.clone());
    let queued = fanout.deliver(session, &frame, stamp_now());
    fanout.finish(0);
    queued
}

/// The state of one publish's fan-out.
pub struct Fanout<'a> {
    shared: &'a Shared,
    /// Sessions whose write token this publish claimed: for the writers.
    ready: Vec<Arc<Session>>,
    /// Sessions the budget cut off under the `disconnect` policy.
    overflowed: Vec<Arc<Session>>,
    queued: u64,
    dropped: u64,
}

impl<'a> Fanout<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            ready: Vec::new(),
            overflowed: Vec::new(),
            queued: 0,
            dropped: 0,
        }
    }

    /// Under the topic's lock: keeps one publish in the topic's history (if
    /// history is kept) and hands each subscriber its form. Returns the
    /// number of subscribers.
    fn hand_out(
        &mut self,
        subscribers: &[(u64, SessionHandle)],
        stream: &mut Stream,
        mut forms: Forms<'_>,
        (now, stamp): (u32, u32),
    ) -> usize {
        let history = &self.shared.history;
        if history.enabled() {
            let kept = forms.get(true, Transport::Tcp).clone();
            stream.append(forms.offset, kept, now, history);
        }
        for (_, SessionHandle(session)) in subscribers {
            let form = forms.get(session.offsets(), session.transport);
            self.deliver(session, form, stamp);
        }
        subscribers.len()
    }

    /// Hands `frame` to one subscriber. Runs under the topic's lock: queues
    /// and nothing more.
    fn deliver(&mut self, session: &Arc<Session>, frame: &Bytes, stamp: u32) -> bool {
        // `--test-fanout-delay`: a slow fan-out on purpose, to prove that
        // the load gate notices one.
        if let Some(delay) = self.shared.config.test_fanout_delay {
            let start = std::time::Instant::now();
            while start.elapsed() < delay {
                std::hint::spin_loop();
            }
        }
        let push = session.outbound.push_delivery(frame, stamp, || {
            let budget = session.outbound.budget();
            let reason = CloseReason::SlowConsumer;
            let frame = ServerMessage::error(
                &ProtocolError::new(reason.code(), reason.reason(&budget)),
                Timestamp::now(),
            )
            .to_bytes();
            session.transport.last(Some(frame)).unwrap_or_default()
        });
        let queued = match push {
            Push::Queued { dropped, .. } => {
                self.dropped += dropped as u64;
                self.queued += 1;
                true
            }
            Push::Overflow { dropped, .. } => {
                self.dropped += dropped as u64;
                self.overflowed.push(session.clone());
                false
            }
            Push::Dropped { dropped } => {
                self.dropped += dropped as u64;
                false
            }
            Push::Refused => false,
        };
        if push.claimed() {
            self.ready.push(session.clone());
            if self.ready.len() >= SCHEDULE_CHUNK {
                self.shared.writers.queue().schedule_all(&mut self.ready);
            }
        }
        queued
    }

    /// After the topic is unlocked: hands the remaining ready sessions to the
    /// writers, closes the subscribers the budget cut off, and counts.
    fn finish(mut self, published: u64) {
        let shared = self.shared;
        shared.writers.queue().schedule_all(&mut self.ready);
        for session in self.overflowed.drain(..) {
            shared.slow_consumer_cut(&session);
        }
        shared
            .stats
            .count_fanout(published, self.queued, self.dropped);
    }
}
