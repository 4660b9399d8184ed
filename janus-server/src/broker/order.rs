//! Per-topic ordering on the receiving side, without I/O: which offset a
//! node delivered last, whether a message is the next one, a duplicate or
//! past a hole, and what a history read fills in.
//!
//! Every node delivers a topic's messages in offset order, each once. Live
//! messages normally arrive in order (the publish script publishes in
//! offset order and one pub/sub connection keeps it); a hole appears only
//! around a subscription or a reconnect, and is filled from the topic's
//! stream before the message after it is delivered. What the stream no
//! longer holds becomes a reported [`TopicGap`], never a reordering.

/// What a node lost of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapKind {
    /// Offsets `from..=to` of `epoch` are gone from the topic's history
    /// (trimmed to the history size, or expired) and were not delivered.
    Missed {
        /// The topic's epoch.
        epoch: String,
        /// First offset not delivered.
        from: u64,
        /// Last offset not delivered.
        to: u64,
    },
    /// The topic's stream was replaced (Redis lost its data, or an idle
    /// topic's history expired): offsets start again under `new_epoch`
    /// (`None` until the next publish), and whatever followed offset `last`
    /// of `old_epoch` was not delivered.
    EpochChanged {
        /// The epoch the node was following.
        old_epoch: String,
        /// The last offset of `old_epoch` it delivered.
        last: u64,
        /// The topic's epoch now.
        new_epoch: Option<String>,
    },
}

/// A hole in what a node delivered of one topic, reported in order with its
/// messages: everything reported before it was delivered before the hole,
/// everything after it follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicGap {
    /// The topic.
    pub topic: String,
    /// What was lost.
    pub kind: GapKind,
}

/// What to do with a live message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It is the next message: deliver it, then [`Track::delivered`].
    Deliver,
    /// Already delivered (or from before the subscription): drop it.
    Duplicate,
    /// Offsets `from..=to` come first: read them from the stream.
    Fill {
        /// First missing offset.
        from: u64,
        /// Last missing offset (the message's offset minus one).
        to: u64,
    },
}

/// One thing to hand to the server, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Deliver the entry at this offset (of the track's epoch) with this body.
    Deliver(u64, Vec<u8>),
    /// Report this gap.
    Gap(TopicGap),
}

/// Whether a history read should be followed by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Caught up (to the stream's end, or to the offset asked for).
    Done,
    /// Read again from [`Track::next_offset`].
    More,
}

/// Where a node is in one topic of interest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// The epoch of the stream being followed; `None` while the topic has
    /// no stream (then `last` is 0).
    pub epoch: Option<String>,
    /// The last offset delivered (or the topic's offset when interest began).
    pub last: u64,
    /// Whether `epoch` and `last` were read from Redis yet. A topic whose
    /// interest began while Redis was unreachable is not; it starts at
    /// whatever the topic's offset is when the node reconnects.
    pub known: bool,
}

impl Track {
    /// A position read from Redis: interest starts after `latest`.
    pub fn starting_at(epoch: Option<String>, latest: u64) -> Track {
        Track {
            epoch,
            last: latest,
            known: true,
        }
    }

    /// The first offset not yet delivered.
    pub fn next_offset(&self) -> u64 {
        self.last.saturating_add(1)
    }

    /// Follows `epoch` if it is not the one being followed, reporting the
    /// change (a topic first seen at offset 0 simply adopts its epoch).
    /// Returns whether a history read made from the old position must be
    /// made again from the new epoch's start.
    fn follow(&mut self, topic: &str, epoch: Option<&str>, gaps: &mut Vec<TopicGap>) -> bool {
        if self.epoch.as_deref() == epoch {
            return false;
        }
        if let Some(old_epoch) = self.epoch.take() {
            gaps.push(TopicGap {
                topic: topic.to_owned(),
                kind: GapKind::EpochChanged {
                    old_epoch,
                    last: self.last,
                    new_epoch: epoch.map(str::to_owned),
                },
            });
        }
        // A read from offset 1 is valid in the new epoch too; a topic
        // with no stream now has nothing to read.
        let read_again = self.last > 0 && epoch.is_some();
        self.epoch = epoch.map(str::to_owned);
        self.last = 0;
        read_again
    }

    /// Judges a live message of `epoch` at `offset`. An epoch change is
    /// reported into `gaps` first, and numbering restarts.
    pub fn live(
        &mut self,
        topic: &str,
        epoch: &str,
        offset: u64,
        gaps: &mut Vec<TopicGap>,
    ) -> Verdict {
        if !self.known {
            // No position was read: interest starts with this message.
            *self = Track::starting_at(Some(epoch.to_owned()), offset.saturating_sub(1));
            return Verdict::Deliver;
        }
        self.follow(topic, Some(epoch), gaps);
        if offset <= self.last {
            Verdict::Duplicate
        } else if offset == self.next_offset() {
            Verdict::Deliver
        } else {
            Verdict::Fill {
                from: self.next_offset(),
                to: offset - 1,
            }
        }
    }

    /// Records that `offset` was delivered.
    pub fn delivered(&mut self, offset: u64) {
        self.last = offset;
    }

    /// Gives up on offsets up to `to` (a fill that the stream could not
    /// serve), returning the gap to report.
    pub fn skip_to(&mut self, topic: &str, to: u64) -> Option<TopicGap> {
        if to <= self.last {
            return None;
        }
        let gap = self.epoch.as_ref().map(|epoch| TopicGap {
            topic: topic.to_owned(),
            kind: GapKind::Missed {
                epoch: epoch.clone(),
                from: self.next_offset(),
                to,
            },
        });
        self.last = to;
        gap
    }

    /// Applies a history read that started at [`Track::next_offset`] and
    /// asked for `count` entries, catching up at most to `until`: pushes the
    /// entries to deliver and the holes to report onto `steps`, in order,
    /// and says whether to read on.
    pub fn apply_range(
        &mut self,
        topic: &str,
        reply: super::scripts::RangeReply,
        count: usize,
        until: u64,
        steps: &mut Vec<Step>,
    ) -> Next {
        self.known = true;
        let mut gaps = Vec::new();
        let read_again = self.follow(topic, reply.epoch.as_deref(), &mut gaps);
        steps.extend(gaps.into_iter().map(Step::Gap));
        if read_again {
            // The read started at an offset of the old epoch: read the new
            // one from its start.
            return Next::More;
        }
        let full_page = reply.entries.len() >= count;
        for (offset, body) in reply.entries {
            if offset > until {
                break;
            }
            if offset <= self.last {
                continue;
            }
            if offset > self.next_offset() {
                steps.extend(self.skip_to(topic, offset - 1).map(Step::Gap));
            }
            steps.push(Step::Deliver(offset, body));
            self.last = offset;
        }
        let end = reply.latest.min(until);
        if self.last >= end {
            Next::Done
        } else if full_page {
            Next::More
        } else {
            // The stream ends before `end` but the topic's offset is past
            // it: those entries are gone.
            steps.extend(self.skip_to(topic, end).map(Step::Gap));
            Next::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::scripts::RangeReply;
    use super::*;

    fn range(epoch: &str, latest: u64, offsets: &[u64]) -> RangeReply {
        RangeReply {
            epoch: (!epoch.is_empty()).then(|| epoch.to_owned()),
            latest,
            entries: offsets
                .iter()
                .map(|o| (*o, o.to_string().into_bytes()))
                .collect(),
        }
    }

    fn missed(from: u64, to: u64) -> TopicGap {
        TopicGap {
            topic: "t".into(),
            kind: GapKind::Missed {
                epoch: "e".into(),
                from,
                to,
            },
        }
    }

    #[test]
    fn live_messages_are_delivered_once_in_order() {
        let mut track = Track::starting_at(Some("e".into()), 3);
        let mut gaps = Vec::new();
        assert_eq!(track.live("t", "e", 3, &mut gaps), Verdict::Duplicate);
        assert_eq!(track.live("t", "e", 4, &mut gaps), Verdict::Deliver);
        track.delivered(4);
        assert_eq!(track.live("t", "e", 4, &mut gaps), Verdict::Duplicate);
        assert_eq!(
            track.live("t", "e", 7, &mut gaps),
            Verdict::Fill { from: 5, to: 6 }
        );
        assert!(gaps.is_empty());
    }

    #[test]
    fn a_topic_without_history_adopts_the_first_epoch_silently() {
        let mut track = Track::starting_at(None, 0);
        let mut gaps = Vec::new();
        assert_eq!(track.live("t", "e", 1, &mut gaps), Verdict::Deliver);
        assert_eq!(track.epoch.as_deref(), Some("e"));
        assert!(gaps.is_empty());
    }

    #[test]
    fn an_epoch_change_is_reported_and_numbering_restarts() {
        let mut track = Track::starting_at(Some("old".into()), 9);
        let mut gaps = Vec::new();
        assert_eq!(
            track.live("t", "new", 2, &mut gaps),
            Verdict::Fill { from: 1, to: 1 }
        );
        assert_eq!(
            gaps,
            [TopicGap {
                topic: "t".into(),
                kind: GapKind::EpochChanged {
                    old_epoch: "old".into(),
                    last: 9,
                    new_epoch: Some("new".into()),
                },
            }]
        );
    }

    #[test]
    fn a_range_fills_holes_and_reports_what_was_trimmed() {
        let mut track = Track::starting_at(Some("e".into()), 2);
        let mut steps = Vec::new();
        // Offsets 3 and 4 were trimmed; 5..=6 remain; the topic is at 6.
        let next = track.apply_range("t", range("e", 6, &[5, 6]), 10, u64::MAX, &mut steps);
        assert_eq!(next, Next::Done);
        assert_eq!(
            steps,
            [
                Step::Gap(missed(3, 4)),
                Step::Deliver(5, b"5".to_vec()),
                Step::Deliver(6, b"6".to_vec()),
            ]
        );
        assert_eq!(track.last, 6);
    }

    #[test]
    fn a_full_page_asks_for_more_and_until_bounds_a_fill() {
        let mut track = Track::starting_at(Some("e".into()), 0);
        let mut steps = Vec::new();
        let next = track.apply_range("t", range("e", 9, &[1, 2]), 2, u64::MAX, &mut steps);
        assert_eq!((next, track.next_offset()), (Next::More, 3));
        // A fill up to 4 stops there even if the stream holds more.
        let next = track.apply_range("t", range("e", 9, &[3, 4, 5]), 3, 4, &mut steps);
        assert_eq!((next, track.last), (Next::Done, 4));
        let offsets: Vec<u64> = steps
            .iter()
            .map(|s| match s {
                Step::Deliver(o, _) => *o,
                Step::Gap(g) => panic!("unexpected {g:?}"),
            })
            .collect();
        assert_eq!(offsets, [1, 2, 3, 4]);
    }

    #[test]
    fn an_empty_stream_behind_the_offset_is_a_gap() {
        let mut track = Track::starting_at(Some("e".into()), 1);
        let mut steps = Vec::new();
        let next = track.apply_range("t", range("e", 4, &[]), 10, u64::MAX, &mut steps);
        assert_eq!((next, track.last), (Next::Done, 4));
        assert_eq!(steps, [Step::Gap(missed(2, 4))]);
    }

    #[test]
    fn a_range_of_another_epoch_restarts_from_its_beginning() {
        let mut track = Track::starting_at(Some("old".into()), 5);
        let mut steps = Vec::new();
        let next = track.apply_range("t", range("new", 3, &[]), 10, u64::MAX, &mut steps);
        assert_eq!((next, track.next_offset()), (Next::More, 1));
        assert!(matches!(
            &steps[..],
            [Step::Gap(TopicGap {
                kind: GapKind::EpochChanged { last: 5, .. },
                ..
            })]
        ));
        let next = track.apply_range("t", range("new", 3, &[1, 2, 3]), 10, u64::MAX, &mut steps);
        assert_eq!((next, track.last), (Next::Done, 3));
        assert_eq!(steps.len(), 4);
        // A topic whose history vanished entirely waits at offset 0 of no epoch.
        let next = track.apply_range("t", range("", 0, &[]), 10, u64::MAX, &mut steps);
        assert_eq!(
            (next, track.epoch.clone(), track.last),
            (Next::Done, None, 0)
        );
        assert_eq!(steps.len(), 5);
    }
}
