//! # evloop
//!
//! A single-threaded event loop: shadowsocks' `eventloop.py`, done right in Rust.
//!
//! The loop watches every registered descriptor, collects the events that happen
//! on them, and hands each event to the handler registered for it.

#![warn(missing_docs)]

mod event_loop;
pub mod events;
pub mod poller;
pub mod signal;
pub mod timer;
mod waker;

pub use event_loop::{Builder, Ctx, EventLoop, Handler, PeriodicId, TIMEOUT_PRECISION, Token, get_sock_error};
pub use events::{EVENT_NAMES, Events, POLL_ERR, POLL_HUP, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT};
pub use poller::{BACKEND_ENV, Backend, PollEvent, Poller, PollerError};
pub use signal::Signal;
pub use timer::TimerId;
pub use waker::LoopHandle;

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
