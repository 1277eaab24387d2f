//! The select(2) backend. (Being written.)

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError};
use crate::events::Events;

/// A poller on select(2).
#[derive(Default)]
pub struct Select {}

impl Select {
    /// A new, empty poller.
    pub fn new() -> Select {
        Select {}
    }
}

impl Poller for Select {
    fn register(&mut self, fd: RawFd, _mode: Events) -> io::Result<()> {
        Err(PollerError::custom(
            Backend::Select,
            "register",
            Some(fd),
            io::ErrorKind::Unsupported,
            "not written yet",
        ))
    }
    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        Err(PollerError::not_registered(Backend::Select, "unregister", fd))
    }
    fn modify(&mut self, fd: RawFd, _mode: Events) -> io::Result<()> {
        Err(PollerError::not_registered(Backend::Select, "modify", fd))
    }
    fn poll(&mut self, _timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        Ok(())
    }
    fn backend(&self) -> Backend {
        Backend::Select
    }
}
