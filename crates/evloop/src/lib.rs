//! # evloop
//!
//! A single-threaded event loop: shadowsocks' `eventloop.py`, done right in Rust.
//!
//! The loop watches every registered descriptor, collects the events that happen
//! on them, and hands each event to the handler registered for it.
//!
//! | the original | here |
//! |---|---|
//! | `POLL_IN` … `POLL_NVAL`, `EVENT_NAMES` | [`Events`] and its constants, printed by name |
//! | `EventLoop.add(sock, mode, handler)` | [`EventLoop::add`] → [`Token`]; the loop owns the source ([`EventLoop::add_foreign`] watches one it does not) |
//! | `remove(sock)`, `modify(sock, mode)` | [`EventLoop::remove`] (unregister, then close), [`EventLoop::modify`], [`EventLoop::set_handler`] |
//! | `handle_event(sock, fd, event)` | a closure `FnMut(&mut Ctx<D>, &mut S, Token, Events) -> io::Result<()>` |
//! | `add_periodic`, `TIMEOUT_PRECISION` | [`EventLoop::add_periodic`], [`Builder::timeout_precision`] |
//! | `run`, `stop` | [`EventLoop::run`], [`EventLoop::run_once`], [`EventLoop::stop`], [`LoopHandle::stop`] from any thread |
//! | epoll, kqueue, select | [`poller`]: epoll, kqueue, poll, select, one contract |
//! | — | timers ([`EventLoop::add_timer`]), signals ([`EventLoop::add_signals`]), cross-thread wake-up ([`EventLoop::handle`]) |
//!
//! Stale events cannot reach the wrong handler: events carry generation-checked
//! tokens resolved before any handler runs, so a registration removed earlier in
//! a batch, or a newcomer that reused its fd number, gets nothing.

#![warn(missing_docs)]
// The one crate of the workspace that may use `unsafe` (the workspace denies it):
// for the system calls, each block with a `// SAFETY:` line.
#![allow(unsafe_code)]

mod event_loop;
pub mod events;
mod file_id;
pub mod poller;
mod shrink;
pub mod signal;
pub mod timer;
mod token;
mod waker;

pub use event_loop::{Builder, Ctx, EventLoop, ForeignFd, Handler, PeriodicId, TIMEOUT_PRECISION, get_sock_error};
pub use events::{EVENT_NAMES, Events, POLL_ERR, POLL_HUP, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT};
pub use poller::{BACKEND_ENV, Backend, PollEvent, Poller, PollerError};
pub use signal::Signal;
pub use timer::TimerId;
pub use token::Token;
pub use waker::LoopHandle;

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
