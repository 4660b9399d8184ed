//! Writer threads: where deliveries are written to subscriber sockets.
//!
//! A fan-out marks each subscriber session that has something new to send as
//! ready and hands the ready sessions, in batches, to a small pool of plain
//! OS threads (one per core by default). A writer takes a session, moves what
//! is queued out of it and writes it with one vectored write, then moves on.
//! The connection tasks on the async runtime are then left with what is
//! rare — reading requests, heartbeats, sockets whose buffers are full — so
//! a publisher's next message is read promptly instead of waiting behind
//! tens of thousands of write tasks. That is what lets messages pile up per
//! subscriber while a write round is in progress, so that the next round
//! writes several messages per syscall: the per-delivery cost falls as the
//! load rises, instead of the latency.
//!
//! Who writes a socket is decided by the session's [`Owner`] state under its
//! outbox lock, so exactly one party writes at a time and order is kept:
//! `Idle` → `Writer` when something is queued; `Writer` → `Idle` when the
//! queue is empty; `Writer` → `Task` when the socket would block (the
//! connection task waits for writability), when the session must close, or
//! when the connection task asks for the socket (`handover`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::session::{Outgoing, Session};

/// Sessions a writer takes from the ready queue at a time: small enough that
/// the threads share a large fan-out evenly, large enough to make the queue
/// lock cheap.
const TAKE: usize = 64;

#[derive(Debug, Default)]
struct Ready {
    sessions: VecDeque<Arc<Session>>,
    stop: bool,
}

/// The shared half of the writer pool: the ready queue.
#[derive(Debug, Default)]
pub struct WriterQueue {
    ready: Mutex<Ready>,
    available: Condvar,
}

impl WriterQueue {
    fn lock(&self) -> MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one ready session to the writers.
    pub fn schedule(&self, session: Arc<Session>) {
        self.lock().sessions.push_back(session);
        self.available.notify_one();
    }

    /// Hands a batch of ready sessions to the writers (leaves `batch` empty).
    pub fn schedule_all(&self, batch: &mut Vec<Arc<Session>>) {
        if batch.is_empty() {
            return;
        }
        let many = batch.len() > 1;
        self.lock().sessions.extend(batch.drain(..));
        if many {
            self.available.notify_all();
        } else {
            self.available.notify_one();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.available.notify_all();
    }
}

/// The pool of writer threads; stopping it (or dropping it) ends them once
/// the ready queue is empty.
#[derive(Debug)]
pub struct Writers {
    queue: Arc<WriterQueue>,
}

impl Writers {
    /// Starts `threads` writer threads (at least one).
    ///
    /// # Errors
    /// The OS error if a thread cannot be started.
    pub fn start(threads: usize) -> std::io::Result<Writers> {
        // The threads are detached: they end by themselves once stopped and
        // the ready queue is empty. If one cannot start, dropping `writers`
        // stops those already running.
        let writers = Writers {
            queue: Arc::new(WriterQueue::default()),
        };
        for i in 0..threads.max(1) {
            let queue = writers.queue.clone();
            std::thread::Builder::new()
                .name(format!("janus-writer-{i}"))
                .spawn(move || run(&queue))?;
        }
        Ok(writers)
    }

    /// The ready queue sessions are scheduled on.
    pub fn queue(&self) -> Arc<WriterQueue> {
        self.queue.clone()
    }

    /// Lets the threads finish what is scheduled, then ends them. Does not
    /// wait for them (this may run on an async worker thread).
    pub fn stop(&self) {
        self.queue.stop();
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.queue.stop();
    }
}

fn run(queue: &WriterQueue) {
    let mut batch: Vec<Arc<Session>> = Vec::with_capacity(TAKE);
    let mut in_flight: VecDeque<Outgoing> = VecDeque::new();
    loop {
        {
            let mut ready = queue.lock();
            while ready.sessions.is_empty() {
                if ready.stop {
                    return;
                }
                ready = queue
                    .available
                    .wait(ready)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let take = TAKE.min(ready.sessions.len());
            batch.extend(ready.sessions.drain(..take));
        }
        for session in batch.drain(..) {
            session.write_from_writer(&mut in_flight);
            in_flight.clear();
        }
    }
}
