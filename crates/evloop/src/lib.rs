//! # evloop
//!
//! A single-threaded event loop: shadowsocks' `eventloop.py`, done right in Rust.
//!
//! The loop watches every registered descriptor, collects the events that happen
//! on them, and hands each event to the handler registered for it.

#![warn(missing_docs)]

pub mod events;
pub mod poller;

pub use events::{EVENT_NAMES, Events, POLL_ERR, POLL_HUP, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT};
pub use poller::{Backend, PollEvent, Poller, PollerError};
