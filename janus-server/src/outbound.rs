//! Everything the server has for one client, and who may write its socket.
//!
//! Each session has one [`Outbound`]. Its state, behind one short mutex, is:
//!
//! ```text
//!            head (partly written frame)     queue (whole frames, oldest first)
//!  socket <- [ ...rest of frame 7 ]  <-  [ frame 8 ][ ACK ][ frame 9 ] ... <- fan-out, replies
//!                 ^ only the token holder            ^ the only thing a policy may drop
//! ```
//!
//! - **The write token.** Whoever has something to write claims the token
//!   (a push that finds it free claims it for the pusher); only the holder
//!   writes the socket, so there are never two writers and frames go out in
//!   queue order. The holder moves up to [`MAX_IOVECS`] frames out of the
//!   queue, writes them with one `writev` *without* holding the lock, then
//!   settles what was written under the lock again.
//! - **The head slot.** A frame cut by a partial write keeps its unwritten
//!   rest in `head`, outside the queue: no slow-consumer policy, kick or
//!   shutdown can drop or reorder it, so the client's stream is always whole
//!   frames. Frames taken out but not written at all are whole, and go back
//!   to the front of the queue.
//! - **Parking.** When the socket takes no more, the token is parked with
//!   the session; the connection task waits until the socket is writable and
//!   un-parks it. A client whose socket stays full past the write deadline is
//!   aborted (see `housekeeping`).
//! - **One budget.** `charged` counts every byte not yet written (head,
//!   frames being written, queue) plus [`FRAME_OVERHEAD`] per frame, and
//!   `frames` counts the frames: deliveries, `ACK`s, errors and `PING`s
//!   alike. A delivery that would exceed the budget applies the slow-consumer
//!   policy; a reply to the client's own request is always queued, but the
//!   connection stops reading that client until it has drained to half its
//!   budget. Either way, what a client makes the server hold is bounded.
//! - **Closing.** [`Outbound::close`] queues a final frame (optionally
//!   discarding everything not yet started, so a `kicked` or `slow_consumer`
//!   comes before the backlog) and refuses anything after it; once the final
//!   frame is written the state is `Done`. [`Outbound::abort`] gives up at
//!   once: nothing more is written and the socket is to be dropped.
//!
//! The socket is held here too (`S`, an `Arc<TcpStream>` in the server), so
//! whoever takes the token gets the socket with it, and a session can be
//! detached from one connection and attached to the next. The writing itself
//! is a closure over the socket, so the whole protocol is model-checked with
//! `loom` (feature `model-check`) against a fake socket.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

#[cfg(feature = "model-check")]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(feature = "model-check"))]
use std::sync::{Mutex, MutexGuard};

use crate::config::SlowConsumerPolicy;

/// Most frames gathered into one vectored write.
pub const MAX_IOVECS: usize = 64;

/// What each queued frame costs beyond its bytes: its queue slot and its
/// share of allocator overhead. Counting it keeps a flood of tiny replies
/// (`ACK` is 4 bytes) inside the budget as surely as large deliveries.
pub const FRAME_OVERHEAD: usize = 64;

/// Slots an empty queue may keep: past this (after a burst), a queue that
/// drains gives its memory back, so an idle session holds at most this many
/// frame slots (16 × 40 bytes) whatever it once had queued.
const IDLE_QUEUE_SLOTS: usize = 16;

/// How much one client may have queued, and what happens past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most bytes (each frame counted with [`FRAME_OVERHEAD`]).
    pub bytes: usize,
    /// Most frames.
    pub frames: usize,
    /// What a delivery past the budget does.
    pub policy: SlowConsumerPolicy,
}

/// What a queued frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A published message; `stamp` is when its fan-out began
    /// ([`crate::metrics::stamp_now`]), for the latency histogram.
    Delivery {
        /// Latency stamp of the publish.
        stamp: u32,
    },
    /// Hello, `ACK`, `PING`, an error: written in a write of its own, because
    /// 2009 clients match a whole read against `ACK` (protocol P9).
    Control,
}

/// One complete frame, terminator included.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The bytes (shared with every other subscriber of the same publish).
    pub bytes: Bytes,
    /// Delivery or control frame.
    pub kind: Kind,
}

/// Who may write the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Nobody: the next party with something to write claims it.
    Free,
    /// Someone is writing, or is about to (a writer thread, or the connection task).
    Held,
    /// The socket is full; the connection task waits for it to drain.
    Parked,
}

/// How far the outbound side is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Accepting frames.
    Open,
    /// A final frame (or none) was queued; nothing more is accepted.
    Closing,
    /// Everything up to the final frame is written: the socket may close.
    Done,
    /// Given up: nothing more is written, the socket is to be dropped now.
    Aborted,
}

/// The answer to a push or a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued. `claimed`: the caller now holds the write token and must see
    /// that the session is written (write it, or hand it to a writer).
    /// `dropped`: deliveries the drop-oldest policy discarded to make room.
    Queued {
        /// The caller holds the write token.
        claimed: bool,
        /// Deliveries discarded to make room.
        dropped: usize,
    },
    /// Not queued: the session is closing or gone.
    Refused,
    /// Not queued: the session is detached and over its budget; `dropped`
    /// deliveries (this one included) are lost.
    Dropped {
        /// Deliveries lost.
        dropped: usize,
    },
    /// Over budget under the `disconnect` policy: every queued delivery was
    /// discarded (`dropped`, this one included) and the session is closing
    /// with the `slow_consumer` frame queued. `claimed` as for `Queued`.
    Overflow {
        /// The caller holds the write token.
        claimed: bool,
        /// Deliveries discarded.
        dropped: usize,
    },
}

impl Push {
    /// Whether the caller now holds the write token.
    pub fn claimed(self) -> bool {
        matches!(
            self,
            Push::Queued { claimed: true, .. } | Push::Overflow { claimed: true, .. }
        )
    }
}

/// The answer to [`Outbound::flush`].
#[derive(Debug)]
pub enum Flushed {
    /// Nothing left to write; the token is free again. `wake`: the
    /// connection task stopped reading for lack of budget and may resume.
    Idle {
        /// The connection task should look again.
        wake: bool,
    },
    /// The write limit was reached with more to write; the caller still holds
    /// the token and should come back later (other sessions go first).
    /// `wake` as for `Idle`.
    More {
        /// The connection task should look again.
        wake: bool,
    },
    /// The socket is full; the token is parked until the connection task
    /// sees it writable. The connection task must be woken.
    Parked,
    /// The final frame is written. The connection task must be woken to close.
    Done,
    /// The session was aborted; nothing was (or will be) written.
    Aborted,
    /// The socket failed; the session is now aborted.
    Failed(io::Error),
}

/// Counts a writer accumulates over many flushes and adds to the server's
/// counters once per batch, not once per delivery.
#[derive(Debug, Default)]
pub struct Tally {
    /// Bytes written.
    pub bytes: u64,
    /// Deliveries completely written.
    pub deliveries: u64,
    /// Latencies of completed deliveries, in microseconds, as (stamp of
    /// publish, stamp of write) pairs are turned into durations by the caller.
    pub latencies: Vec<u32>,
}

/// A snapshot of an outbound side, for the connection task and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Lifecycle.
    pub end: End,
    /// The socket is full and the token waits for it.
    pub parked: bool,
    /// Frames not yet completely written.
    pub frames: usize,
    /// Bytes charged against the budget.
    pub charged: usize,
    /// The client is over its budget: its own requests are not read.
    pub over_budget: bool,
    /// A delivery was written to this client (heartbeats may start, P4).
    pub delivered_any: bool,
    /// Deliveries completely written.
    pub delivered: u64,
    /// Latency stamp of the last write that made progress.
    pub last_write: u32,
    /// Latency stamp since when the token is parked (meaningful if `parked`).
    pub parked_since: u32,
    /// A socket is attached (a connection serves this session).
    pub attached: bool,
    /// While detached, more was published than the budget holds: what was
    /// queued is gone.
    pub overflowed: bool,
}

/// What [`Outbound::attach`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The caller holds the write token and must see that it is written.
    pub claimed: bool,
    /// Deliveries queued while detached, now about to be written.
    pub missed: usize,
    /// Deliveries were lost while detached (the budget overflowed).
    pub overflowed: bool,
}

#[derive(Debug)]
struct State<S> {
    /// Where frames are written; `None` while the session is detached.
    socket: Option<S>,
    /// Changes whenever the socket does, so a writer that wrote to a socket
    /// since replaced knows its frames did not go to the new one.
    generation: u64,
    queue: VecDeque<Frame>,
    /// A frame a partial write cut, and how many of its bytes are written;
    /// only the token holder touches it. A session moved to a new
    /// connection sends it again whole.
    head: Option<(Frame, usize)>,
    /// More was published than the budget holds while detached.
    overflowed: bool,
    /// Bytes not yet written plus [`FRAME_OVERHEAD`] per frame: head, in flight, queue.
    charged: usize,
    /// Frames not yet completely written: head, in flight, queue.
    frames: usize,
    /// Deliveries in `queue` (what drop-oldest may discard).
    queued_deliveries: usize,
    token: Token,
    end: End,
    /// A discarding close happened while frames were in flight: the holder
    /// drops the unwritten ones instead of putting them back.
    discard_in_flight: bool,
    /// The connection task stopped reading until the budget drains to half.
    reader_waiting: bool,
    /// The budget drained to half while the reader waited: wake it.
    wake_reader: bool,
    delivered_any: bool,
    delivered: u64,
    last_write: u32,
    parked_since: u32,
}

/// The outbound side of one session, writing to a socket `S`. See the
/// module documentation.
#[derive(Debug)]
pub struct Outbound<S> {
    state: Mutex<State<S>>,
    budget: Budget,
}

impl<S: Clone> Outbound<S> {
    /// An empty, open outbound side writing to `socket`; `now` is a latency stamp.
    pub fn new(socket: Option<S>, budget: Budget, now: u32) -> Self {
        Self {
            state: Mutex::new(State {
                socket,
                generation: 0,
                queue: VecDeque::new(),
                head: None,
                overflowed: false,
                charged: 0,
                frames: 0,
                queued_deliveries: 0,
                token: Token::Free,
                end: End::Open,
                discard_in_flight: false,
                reader_waiting: false,
                wake_reader: false,
                delivered_any: false,
                delivered: 0,
                last_write: now,
                parked_since: now,
            }),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        // Every update below completes before anything that could panic, so a
        // poisoned lock still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The budget this side was created with.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Queues a delivery, applying the slow-consumer policy when it does not
    /// fit. `overflow_frame` builds the `slow_consumer` error frame; it runs
    /// only if the `disconnect` policy fires.
    pub fn push_delivery(
        &self,
        bytes: &Bytes,
        stamp: u32,
        overflow_frame: impl FnOnce() -> Bytes,
    ) -> Push {
        let cost = bytes.len() + FRAME_OVERHEAD;
        let mut st = self.lock();
        if st.end != End::Open {
            return Push::Refused;
        }
        let mut dropped = 0;
        if st.socket.is_none() && (st.overflowed || !st.fits(&self.budget, cost)) {
            // Detached and full: what was queued is lost anyway (a token
            // resume will say so); hold nothing more until a connection returns.
            dropped = st.discard_queue() + 1;
            st.overflowed = true;
            return Push::Dropped { dropped };
        }
        if !st.fits(&self.budget, cost) {
            match self.budget.policy {
                SlowConsumerPolicy::Disconnect => {
                    let dropped = st.discard_queue() + 1;
                    st.queue_frame(Frame {
                        bytes: overflow_frame(),
                        kind: Kind::Control,
                    });
                    st.begin_close();
                    return Push::Overflow {
                        claimed: st.claim(),
                        dropped,
                    };
                }
                SlowConsumerPolicy::DropOldest => {
                    // The newest delivery is kept: when only frames already
                    // being written (or replies) hold the budget, it is queued
                    // anyway, so the overshoot is at most this one frame.
                    while !st.fits(&self.budget, cost) && st.drop_oldest_delivery() {
                        dropped += 1;
                    }
                }
            }
        }
        st.queue_frame(Frame {
            bytes: bytes.clone(),
            kind: Kind::Delivery { stamp },
        });
        Push::Queued {
            claimed: st.claim(),
            dropped,
        }
    }

    /// Queues a control frame (a reply, a `PING`). It is never dropped by a
    /// policy; a client over budget is simply not read (see [`Status::over_budget`]).
    pub fn push_control(&self, bytes: Bytes) -> Push {
        let mut st = self.lock();
        if st.end != End::Open {
            return Push::Refused;
        }
        st.queue_frame(Frame {
            bytes,
            kind: Kind::Control,
        });
        Push::Queued {
            claimed: st.claim(),
            dropped: 0,
        }
    }

    /// Starts closing: `last` (if any) is the final frame, and nothing is
    /// accepted after it. With `discard`, every frame not yet started is
    /// dropped first, so `last` comes right after the frame being written (a
    /// kick, a slow consumer); without, everything queued is written first (a
    /// graceful shutdown). Returns `Refused` if the side was already closing.
    pub fn close(&self, last: Option<Bytes>, discard: bool) -> Push {
        let mut st = self.lock();
        if st.end != End::Open {
            return Push::Refused;
        }
        let dropped = if discard { st.discard_queue() } else { 0 };
        if let Some(bytes) = last {
            st.queue_frame(Frame {
                bytes,
                kind: Kind::Control,
            });
        }
        st.begin_close();
        Push::Queued {
            claimed: st.claim(),
            dropped,
        }
    }

    /// Gives up on the client: discards everything and marks the side
    /// aborted. Returns the frames that were still unwritten.
    pub fn abort(&self) -> usize {
        let mut st = self.lock();
        let unwritten = st.frames;
        st.discard_queue();
        if st.token != Token::Held {
            // Nobody is writing: nothing is in flight, drop the head too.
            st.head = None;
            st.charged = 0;
            st.frames = 0;
            st.token = Token::Free;
        } else {
            st.discard_in_flight = true;
        }
        st.socket = None;
        st.generation += 1;
        st.end = End::Aborted;
        unwritten
    }

    /// The connection is lost (or given up on): the socket is dropped from
    /// this side, and whatever was queued waits for a connection to
    /// [`Outbound::attach`] it. A frame already partly written will be sent
    /// again whole. Returns false if no socket was attached.
    pub fn detach(&self) -> bool {
        let mut st = self.lock();
        if st.socket.is_none() {
            return false;
        }
        st.socket = None;
        st.generation += 1;
        if st.token != Token::Held {
            // Nobody writes now; the holder of a held token re-queues the
            // head when it comes back from its write.
            st.restore_head();
            st.token = Token::Parked;
        }
        true
    }

    /// Attaches a new connection's socket (a resume). `first` builds the
    /// frame that goes before everything queued (the `resumed` answer), from
    /// whether nothing was lost and how many deliveries wait.
    pub fn attach(&self, socket: S, first: impl FnOnce(bool, usize) -> Bytes) -> Attached {
        let mut st = self.lock();
        let overflowed = std::mem::take(&mut st.overflowed);
        let missed = st.queued_deliveries;
        let frame = Frame {
            bytes: first(!overflowed, missed),
            kind: Kind::Control,
        };
        st.charged += frame.bytes.len() + FRAME_OVERHEAD;
        st.frames += 1;
        st.queue.push_front(frame);
        st.socket = Some(socket);
        st.generation += 1;
        if st.token == Token::Parked {
            st.token = Token::Free;
        }
        Attached {
            claimed: st.claim(),
            missed,
            overflowed,
        }
    }

    /// The connection task saw the socket writable: takes the parked token.
    /// Returns whether the caller now holds it.
    pub fn unpark(&self) -> bool {
        let mut st = self.lock();
        if st.token == Token::Parked && st.end != End::Aborted && st.socket.is_some() {
            st.token = Token::Held;
            true
        } else {
            false
        }
    }

    /// Claims the token if it is free and something is waiting (used after
    /// a reattach or by a sweeper). Returns whether the caller now holds it.
    pub fn claim(&self) -> bool {
        self.lock().claim()
    }

    /// For the connection task: whether the client may be read now. Past the
    /// budget it may not, and the task is woken (through [`Flushed::Idle`])
    /// once the queue has drained to half.
    pub fn may_read(&self) -> bool {
        let mut st = self.lock();
        if st.over(&self.budget) {
            st.reader_waiting = true;
            false
        } else {
            true
        }
    }

    /// A snapshot for the connection task, the sweeper and the admin API.
    pub fn status(&self) -> Status {
        let st = self.lock();
        Status {
            end: st.end,
            parked: st.token == Token::Parked,
            frames: st.frames,
            charged: st.charged,
            over_budget: st.over(&self.budget),
            delivered_any: st.delivered_any,
            delivered: st.delivered,
            last_write: st.last_write,
            parked_since: st.parked_since,
            attached: st.socket.is_some(),
            overflowed: st.overflowed,
        }
    }

    /// Queues a reply (a control frame) and, if the write token was free,
    /// writes it at once with [`Outbound::flush`]'s arguments; returns what
    /// that flush returned, or `None` when someone else writes (or the side is
    /// closing). A reply to an idle client goes straight to the socket without
    /// entering the queue, so a client that only ever got its hello and
    /// `ACK`s holds no queue memory.
    pub fn reply<W, N>(
        &self,
        bytes: Bytes,
        write: W,
        now: N,
        scratch: &mut Vec<Frame>,
        tally: &mut Tally,
        max_writes: usize,
    ) -> Option<Flushed>
    where
        W: FnMut(&S, &[IoSlice<'_>]) -> io::Result<usize>,
        N: FnMut() -> u32,
    {
        let mut st = self.lock();
        if st.end != End::Open {
            return None;
        }
        let frame = Frame {
            bytes,
            kind: Kind::Control,
        };
        if st.token == Token::Free
            && st.head.is_none()
            && st.queue.is_empty()
            && st.socket.is_some()
        {
            // Charged as if queued; `flush` writes it first.
            st.token = Token::Held;
            st.charged += frame.bytes.len() + FRAME_OVERHEAD;
            st.frames += 1;
            drop(st);
            scratch.push(frame);
        } else {
            st.queue_frame(frame);
            if !st.claim() {
                return None;
            }
            drop(st);
        }
        Some(self.flush(write, now, scratch, tally, max_writes))
    }

    /// Writes as much as the socket takes, with at most `max_writes` calls
    /// of `write`. The caller must hold the token. `now` gives a latency stamp;
    /// `scratch` is the caller's reusable buffer, empty except when
    /// [`Outbound::reply`] put a frame to write first in it (left empty).
    pub fn flush<W, N>(
        &self,
        mut write: W,
        mut now: N,
        scratch: &mut Vec<Frame>,
        tally: &mut Tally,
        max_writes: usize,
    ) -> Flushed
    where
        W: FnMut(&S, &[IoSlice<'_>]) -> io::Result<usize>,
        N: FnMut() -> u32,
    {
        // A reply handed over by `reply`, already charged, written first.
        let mut pretaken = !scratch.is_empty();
        for _ in 0..max_writes {
            let (head_written, socket, generation) = {
                let mut st = self.lock();
                debug_assert_eq!(st.token, Token::Held, "flush without the write token");
                if st.end == End::Aborted {
                    scratch.clear();
                    st.release_aborted();
                    return Flushed::Aborted;
                }
                let Some(socket) = st.socket.clone() else {
                    // Detached: what is queued waits for the next connection.
                    let stamp = now();
                    st.settle(scratch, 0, None, stamp, tally);
                    st.park(stamp);
                    return Flushed::Parked;
                };
                let head_written = if std::mem::take(&mut pretaken) {
                    None
                } else {
                    st.take(scratch)
                };
                if scratch.is_empty() {
                    st.token = Token::Free;
                    if st.end == End::Closing {
                        st.end = End::Done;
                        return Flushed::Done;
                    }
                    let wake = st.reader_waiting;
                    st.reader_waiting = false;
                    st.wake_reader = false;
                    return Flushed::Idle { wake };
                }
                (head_written, socket, st.generation)
            };
            let skip = head_written.unwrap_or(0);
            let result = write_all_slices(|slices| write(&socket, slices), scratch, skip);
            drop(socket);
            let stamp = now();
            let mut st = self.lock();
            if st.end == End::Aborted {
                scratch.clear();
                st.release_aborted();
                return Flushed::Aborted;
            }
            if st.generation != generation {
                // The socket was detached (or replaced) while this write was
                // on its way: what was written went to the old connection.
                st.settle(
                    scratch,
                    *result.as_ref().unwrap_or(&0),
                    head_written,
                    stamp,
                    tally,
                );
                st.restore_head();
                if st.socket.is_none() {
                    st.park(stamp);
                    return Flushed::Parked;
                }
                continue;
            }
            match result {
                Ok(n) => {
                    let total: usize = scratch.iter().map(|f| f.bytes.len()).sum::<usize>() - skip;
                    tally.bytes += n as u64;
                    st.settle(scratch, n, head_written, stamp, tally);
                    if st.reader_waiting && st.drained(&self.budget) {
                        st.reader_waiting = false;
                        st.wake_reader = true;
                    }
                    if n < total {
                        // The socket took less than offered: it is full. Say so
                        // without another syscall that would only fail.
                        st.park(stamp);
                        return Flushed::Parked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    st.settle(scratch, 0, head_written, stamp, tally);
                    st.park(stamp);
                    return Flushed::Parked;
                }
                Err(e) => {
                    // The connection is lost; what is queued stays with the
                    // session (its connection task decides whether the
                    // session waits for a resume or goes).
                    st.settle(scratch, 0, head_written, stamp, tally);
                    st.socket = None;
                    st.generation += 1;
                    st.restore_head();
                    st.park(stamp);
                    return Flushed::Failed(e);
                }
            }
        }
        let wake = std::mem::take(&mut self.lock().wake_reader);
        Flushed::More { wake }
    }
}

impl<S> State<S> {
    /// Whether a frame costing `cost` fits the budget.
    fn fits(&self, budget: &Budget, cost: usize) -> bool {
        self.frames < budget.frames && self.charged + cost <= budget.bytes
    }

    /// Whether the budget is exceeded (the client's requests are not read).
    fn over(&self, budget: &Budget) -> bool {
        self.frames >= budget.frames || self.charged >= budget.bytes
    }

    /// Whether the budget has drained to half (reading may resume).
    fn drained(&self, budget: &Budget) -> bool {
        self.frames <= budget.frames / 2 && self.charged <= budget.bytes / 2
    }

    fn queue_frame(&mut self, frame: Frame) {
        self.charged += frame.bytes.len() + FRAME_OVERHEAD;
        self.frames += 1;
        if matches!(frame.kind, Kind::Delivery { .. }) {
            self.queued_deliveries += 1;
        }
        self.queue.push_back(frame);
    }

    fn unqueue(&mut self, frame: &Frame) {
        self.charged -= frame.bytes.len() + FRAME_OVERHEAD;
        self.frames -= 1;
    }

    /// Claims the token for the caller if it is free and there is something to write.
    fn claim(&mut self) -> bool {
        if self.token == Token::Free
            && self.end != End::Aborted
            && self.socket.is_some()
            && (self.head.is_some() || !self.queue.is_empty() || self.end == End::Closing)
        {
            self.token = Token::Held;
            true
        } else {
            false
        }
    }

    fn begin_close(&mut self) {
        self.end = End::Closing;
    }

    /// Drops every queued frame not yet started; returns how many were deliveries.
    fn discard_queue(&mut self) -> usize {
        let deliveries = self.queued_deliveries;
        while let Some(frame) = self.queue.pop_front() {
            self.unqueue(&frame);
        }
        self.queued_deliveries = 0;
        if self.token == Token::Held {
            self.discard_in_flight = true;
        }
        deliveries
    }

    /// Drops the oldest queued delivery; false if there is none.
    fn drop_oldest_delivery(&mut self) -> bool {
        let Some(pos) = self
            .queue
            .iter()
            .position(|f| matches!(f.kind, Kind::Delivery { .. }))
        else {
            return false;
        };
        if let Some(frame) = self.queue.remove(pos) {
            self.unqueue(&frame);
            self.queued_deliveries -= 1;
        }
        true
    }

    /// Moves the next write's frames into `into`: the head first, then one
    /// control frame alone or a run of deliveries. Returns, when `into[0]` is
    /// the head (a frame already partly written), how much of it is written.
    fn take(&mut self, into: &mut Vec<Frame>) -> Option<usize> {
        let mut head_written = None;
        if let Some((head, written)) = self.head.take() {
            let alone = head.kind == Kind::Control;
            into.push(head);
            head_written = Some(written);
            if alone {
                return head_written;
            }
        }
        while into.len() < MAX_IOVECS {
            let Some(front) = self.queue.front() else {
                break;
            };
            let control = front.kind == Kind::Control;
            if control && !into.is_empty() {
                break;
            }
            if let Some(frame) = self.queue.pop_front() {
                if !control {
                    self.queued_deliveries -= 1;
                }
                into.push(frame);
            }
            if control {
                break;
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > IDLE_QUEUE_SLOTS {
            self.queue = VecDeque::new();
        }
        head_written
    }

    /// A partly written head goes back to the front of the queue whole (for
    /// a new connection, which must get whole frames).
    fn restore_head(&mut self) {
        if let Some((frame, written)) = self.head.take() {
            self.charged += written;
            if matches!(frame.kind, Kind::Delivery { .. }) {
                self.queued_deliveries += 1;
            }
            self.queue.push_front(frame);
        }
    }

    /// Accounts for `n` bytes written from the front of `batch`: completed
    /// frames are gone, a cut frame becomes the head, untouched whole frames
    /// go back to the front of the queue (or are dropped, after a discarding
    /// close). Leaves `batch` empty.
    fn settle(
        &mut self,
        batch: &mut Vec<Frame>,
        mut n: usize,
        head_written: Option<usize>,
        stamp: u32,
        tally: &mut Tally,
    ) {
        if n > 0 {
            self.last_write = stamp;
        }
        let mut unwritten: Vec<Frame> = Vec::new();
        for (i, frame) in batch.drain(..).enumerate() {
            let already = if i == 0 { head_written } else { None };
            let len = frame.bytes.len() - already.unwrap_or(0);
            if n >= len {
                n -= len;
                self.charged -= len + FRAME_OVERHEAD;
                self.frames -= 1;
                if let Kind::Delivery { stamp: at } = frame.kind {
                    self.delivered += 1;
                    self.delivered_any = true;
                    tally.deliveries += 1;
                    tally.latencies.push(stamp.wrapping_sub(at));
                }
            } else if n > 0 || already.is_some() {
                // Partly written now, or partly written before: the head.
                self.charged -= n;
                self.head = Some((frame, already.unwrap_or(0) + n));
                n = 0;
            } else {
                unwritten.push(frame);
            }
        }
        if unwritten.is_empty() {
            self.discard_in_flight = false;
            return;
        }
        if std::mem::take(&mut self.discard_in_flight) {
            for frame in &unwritten {
                self.unqueue(frame);
            }
            return;
        }
        for frame in unwritten.into_iter().rev() {
            if matches!(frame.kind, Kind::Delivery { .. }) {
                self.queued_deliveries += 1;
            }
            self.queue.push_front(frame);
        }
    }

    fn park(&mut self, stamp: u32) {
        self.token = Token::Parked;
        self.parked_since = stamp;
    }

    /// The holder of an aborted side lets go: nothing is kept.
    fn release_aborted(&mut self) {
        self.queue.clear();
        self.head = None;
        self.queued_deliveries = 0;
        self.charged = 0;
        self.frames = 0;
        self.discard_in_flight = false;
        self.token = Token::Free;
    }
}

/// One vectored write of `batch` (the first `skip` bytes of its first frame
/// already written), retried on `EINTR`.
fn write_all_slices<W>(mut write: W, batch: &[Frame], skip: usize) -> io::Result<usize>
where
    W: FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
{
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let n = batch.len().min(MAX_IOVECS);
    for (i, (slot, frame)) in slices.iter_mut().zip(batch).enumerate() {
        let from = if i == 0 { skip } else { 0 };
        *slot = IoSlice::new(&frame.bytes[from..]);
    }
    loop {
        match write(&slices[..n]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The model check: every interleaving (up to loom's bounds) of fan-out
/// pushes, a socket that fills and drains, kicks, slow-consumer cuts and
/// shutdown, against a fake socket that fails the test if two parties ever
/// write at once. Run with
/// `cargo test -p janus-server --features model-check --lib outbound::model`.
#[cfg(all(test, feature = "model-check"))]
// Test code: clippy only recognises a plain `#[cfg(test)]` module as one.
#[allow(clippy::unwrap_used)]
mod model {
    use super::*;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    /// A socket that takes at most `room` bytes until drained, and records
    /// everything written.
    struct FakeSocket {
        wire: Mutex<Vec<u8>>,
        room: Mutex<usize>,
        writing: AtomicBool,
    }

    type Side = Outbound<Arc<FakeSocket>>;

    impl FakeSocket {
        fn new(room: usize) -> Arc<Self> {
            Arc::new(Self {
                wire: Mutex::new(Vec::new()),
                room: Mutex::new(room),
                writing: AtomicBool::new(false),
            })
        }

        fn write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            assert!(
                !self.writing.swap(true, Ordering::SeqCst),
                "two parties write the socket at once"
            );
            let mut room = self.room.lock().unwrap();
            let mut wire = self.wire.lock().unwrap();
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(*room - n);
                wire.extend_from_slice(&slice[..take]);
                n += take;
            }
            *room -= n;
            drop((room, wire));
            self.writing.store(false, Ordering::SeqCst);
            if n == 0 {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        }

        fn drain(&self, bytes: usize) {
            *self.room.lock().unwrap() += bytes;
        }

        /// The frames written, split at `;`; fails on a cut frame.
        fn frames(&self) -> Vec<String> {
            let wire = String::from_utf8(self.wire.lock().unwrap().clone()).unwrap();
            assert!(
                wire.is_empty() || wire.ends_with(';'),
                "the stream ends inside a frame: {wire:?}"
            );
            wire.split_terminator(';').map(str::to_owned).collect()
        }
    }

    fn budget(frames: usize, policy: SlowConsumerPolicy) -> Budget {
        Budget {
            bytes: 1 << 20,
            frames,
            policy,
        }
    }

    /// A socket taking `room` bytes, and an outbound side writing to it.
    fn fixture(
        room: usize,
        frames: usize,
        policy: SlowConsumerPolicy,
    ) -> (Arc<FakeSocket>, Arc<Side>) {
        let socket = FakeSocket::new(room);
        let side = Side::new(Some(socket.clone()), budget(frames, policy), 0);
        (socket, Arc::new(side))
    }

    /// Writes while `push` (or an un-park) gave the caller the token.
    fn write_if(side: &Side, holds: bool) {
        if !holds {
            return;
        }
        let mut scratch = Vec::new();
        let mut tally = Tally::default();
        loop {
            match side.flush(
                |sock: &Arc<FakeSocket>, s: &[IoSlice<'_>]| sock.write(s),
                || 0,
                &mut scratch,
                &mut tally,
                4,
            ) {
                Flushed::More { .. } => continue,
                _ => return,
            }
        }
    }

    fn delivery(side: &Side, frame: &'static [u8]) -> bool {
        let push = side.push_delivery(&Bytes::from_static(frame), 0, || Bytes::from_static(b"S;"));
        write_if(side, push.claimed());
        push != Push::Refused
    }

    /// After the race: the socket drains completely, and the parked token is
    /// taken up as the connection task would.
    fn settle(side: &Side, socket: &FakeSocket) {
        socket.drain(1 << 20);
        while side.unpark() {
            write_if(side, true);
        }
        let status = side.status();
        assert!(!status.parked);
        if status.end == End::Open {
            assert_eq!((status.frames, status.charged), (0, 0), "{status:?}");
        }
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    /// Deliveries in order, whole, while the socket fills and drains and an
    /// operator kicks: `kicked` is the last frame and nothing follows it.
    #[test]
    fn publish_drain_and_kick() {
        model(|| {
            let (socket, side) = fixture(4, 64, SlowConsumerPolicy::Disconnect);
            let publisher = {
                let side = side.clone();
                thread::spawn(move || {
                    delivery(&side, b"D1;");
                    delivery(&side, b"D2;");
                })
            };
            let reader = {
                let (side, socket) = (side.clone(), socket.clone());
                thread::spawn(move || {
                    socket.drain(3);
                    write_if(&side, side.unpark());
                })
            };
            let push = side.close(Some(Bytes::from_static(b"K;")), true);
            write_if(&side, push.claimed());
            publisher.join().unwrap();
            reader.join().unwrap();
            settle(&side, &socket);
            let frames = socket.frames();
            assert_eq!(frames.last().map(String::as_str), Some("K"), "{frames:?}");
            assert!(
                frames
                    .iter()
                    .all(|f| f == "K" || (f.len() == 2 && f.starts_with('D'))),
                "{frames:?}"
            );
            let deliveries: Vec<_> = frames.iter().filter(|f| f.starts_with('D')).collect();
            assert!(deliveries.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
            assert_eq!(side.status().end, End::Done);
        });
    }

    /// A slow consumer is cut: `slow_consumer` follows whatever frame was
    /// being written, the stream stays whole, and nothing comes after it.
    #[test]
    fn slow_consumer_cut_while_writing() {
        model(|| {
            let (socket, side) = fixture(2, 2, SlowConsumerPolicy::Disconnect);
            let publisher = {
                let side = side.clone();
                thread::spawn(move || {
                    for frame in [&b"D1;"[..], b"D2;", b"D3;"] {
                        delivery(&side, frame);
                    }
                })
            };
            // A reply written straight to the socket while deliveries race it.
            let mut scratch = Vec::new();
            let flushed = side.reply(
                Bytes::from_static(b"A;"),
                |sock: &Arc<FakeSocket>, s: &[IoSlice<'_>]| sock.write(s),
                || 0,
                &mut scratch,
                &mut Tally::default(),
                4,
            );
            if let Some(Flushed::More { .. }) = flushed {
                write_if(&side, true);
            }
            socket.drain(2);
            write_if(&side, side.unpark());
            publisher.join().unwrap();
            settle(&side, &socket);
            let frames = socket.frames();
            assert!(
                frames
                    .iter()
                    .all(|f| ["A", "S"].contains(&f.as_str())
                        || (f.len() == 2 && f.starts_with('D'))),
                "{frames:?}"
            );
            if let Some(at) = frames.iter().position(|f| f == "S") {
                assert_eq!(at, frames.len() - 1, "{frames:?}");
            }
        });
    }

    /// Drop-oldest discards whole queued deliveries only: what arrives is a
    /// whole-frame, in-order subsequence of what was published.
    #[test]
    fn drop_oldest_keeps_whole_frames_in_order() {
        model(|| {
            let (socket, side) = fixture(2, 2, SlowConsumerPolicy::DropOldest);
            let reader = {
                let (side, socket) = (side.clone(), socket.clone());
                thread::spawn(move || {
                    socket.drain(4);
                    write_if(&side, side.unpark());
                })
            };
            for frame in [&b"D1;"[..], b"D2;", b"D3;", b"D4;"] {
                delivery(&side, frame);
            }
            reader.join().unwrap();
            settle(&side, &socket);
            let frames = socket.frames();
            assert!(
                frames.iter().all(|f| f.len() == 2 && f.starts_with('D')),
                "{frames:?}"
            );
            assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
            assert_eq!(frames.last().map(String::as_str), Some("D4"), "{frames:?}");
        });
    }

    /// A shutdown writes everything queued before it, then its frame, and
    /// refuses what comes after; an abort stops every writer.
    #[test]
    fn shutdown_flushes_first_and_abort_stops_writing() {
        model(|| {
            let (socket, side) = fixture(3, 64, SlowConsumerPolicy::Disconnect);
            delivery(&side, b"D1;");
            let publisher = {
                let side = side.clone();
                thread::spawn(move || delivery(&side, b"D2;"))
            };
            let push = side.close(Some(Bytes::from_static(b"X;")), false);
            write_if(&side, push.claimed());
            let d2_queued = publisher.join().unwrap();
            settle(&side, &socket);
            let frames = socket.frames();
            let mut expected = vec!["D1"];
            if d2_queued {
                expected.push("D2");
            }
            expected.push("X");
            assert_eq!(frames, expected);

            // Abort while a writer may hold the token: it stops, nothing is kept.
            let (_socket, side) = fixture(1, 64, SlowConsumerPolicy::Disconnect);
            let writer = {
                let side = side.clone();
                thread::spawn(move || delivery(&side, b"D1;"))
            };
            side.abort();
            writer.join().unwrap();
            let status = side.status();
            assert_eq!(status.end, End::Aborted);
            assert!(!side.claim() && !side.unpark());
            if !status.parked {
                assert_eq!((status.frames, status.charged), (0, 0), "{status:?}");
            }
        });
    }

    /// A connection is lost while a write may be in flight; a new one
    /// attaches: it gets the `resumed` frame first, then whole frames only,
    /// in order, the partly written one again from its start.
    #[test]
    fn detach_and_attach_while_writing() {
        model(|| {
            let (old, side) = fixture(4, 64, SlowConsumerPolicy::Disconnect);
            let publisher = {
                let side = side.clone();
                thread::spawn(move || {
                    delivery(&side, b"D1;");
                    delivery(&side, b"D2;");
                })
            };
            side.detach();
            publisher.join().unwrap();
            assert!(!side.unpark(), "nobody writes a detached side");
            let new = FakeSocket::new(1 << 20);
            let attached = side.attach(new.clone(), |recovered, missed| {
                assert!(recovered);
                Bytes::from(format!("R{missed};"))
            });
            write_if(&side, attached.claimed);
            let frames = new.frames();
            assert_eq!(frames[0], format!("R{}", attached.missed), "{frames:?}");
            let rest = &frames[1..];
            assert!(
                rest.iter().all(|f| f.len() == 2 && f.starts_with('D')),
                "{frames:?}"
            );
            assert!(rest.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
            // Everything reached one connection or the other, D2 last.
            let old_frames = old.wire.lock().unwrap().clone();
            let on_old = String::from_utf8(old_frames).unwrap();
            assert!(
                rest.last().map(String::as_str) == Some("D2") || on_old.ends_with("D2;"),
                "old {on_old:?}, new {frames:?}"
            );
            assert_eq!(side.status().frames, 0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes nothing while `full`, everything otherwise.
    struct Gate {
        full: std::cell::Cell<bool>,
    }

    fn flush_all(side: &Outbound<std::rc::Rc<Gate>>) -> Flushed {
        let mut tally = Tally::default();
        side.flush(
            |gate: &std::rc::Rc<Gate>, slices: &[IoSlice<'_>]| {
                if gate.full.get() {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(slices.iter().map(|s| s.len()).sum())
                }
            },
            || 0,
            &mut Vec::new(),
            &mut tally,
            usize::MAX,
        )
    }

    /// A queue that held a burst gives its memory back once written; a
    /// small one keeps its slots for the next delivery.
    #[test]
    fn an_idle_queue_keeps_at_most_a_few_slots() {
        let gate = std::rc::Rc::new(Gate {
            full: std::cell::Cell::new(true),
        });
        let budget = Budget {
            bytes: 1 << 20,
            frames: 1000,
            policy: SlowConsumerPolicy::Disconnect,
        };
        let side = Outbound::new(Some(gate.clone()), budget, 0);
        let frame = Bytes::from_static(b"delivery\x01");
        let mut claimed = false;
        for _ in 0..200 {
            claimed |= side.push_delivery(&frame, 0, Bytes::new).claimed();
        }
        assert!(claimed, "the first push takes the write token");
        assert!(matches!(flush_all(&side), Flushed::Parked));
        assert!(side.lock().queue.capacity() >= 200);
        gate.full.set(false);
        assert!(side.unpark());
        assert!(matches!(flush_all(&side), Flushed::Idle { .. }));
        assert_eq!(side.status().frames, 0);
        assert_eq!(
            side.lock().queue.capacity(),
            0,
            "the burst's slots are freed"
        );

        gate.full.set(true);
        for _ in 0..3 {
            side.push_delivery(&frame, 0, Bytes::new);
        }
        assert_eq!(side.status().frames, 3);
        let small = side.lock().queue.capacity();
        assert!((3..=IDLE_QUEUE_SLOTS).contains(&small), "{small}");
    }
}
