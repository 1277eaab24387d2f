//! The poll(2) backend. (Being written.)

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError};
use crate::events::Events;

/// A poller on poll(2).
#[derive(Default)]
pub struct Poll {}

impl Poll {
    /// A new, empty poller.
    pub fn new() -> Poll {
        Poll {}
    }
}

impl Poller for Poll {
    fn register(&mut self, fd: RawFd, _mode: Events) -> io::Result<()> {
        Err(PollerError::custom(
            Backend::Poll,
            "register",
            Some(fd),
            io::ErrorKind::Unsupported,
            "not written yet",
        ))
    }
    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        Err(PollerError::not_registered(Backend::Poll, "unregister", fd))
    }
    fn modify(&mut self, fd: RawFd, _mode: Events) -> io::Result<()> {
        Err(PollerError::not_registered(Backend::Poll, "modify", fd))
    }
    fn poll(&mut self, _timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        Ok(())
    }
    fn backend(&self) -> Backend {
        Backend::Poll
    }
}
