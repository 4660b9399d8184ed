//! Janus server library.
