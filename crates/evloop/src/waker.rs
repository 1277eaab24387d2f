//! Cross-thread wake-up: an eventfd on Linux, a socket pair elsewhere.
//!
//! The loop registers the reading side like any other source; a [`LoopHandle`] on
//! another thread writes to it, which ends a blocked poll at once.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::fs::File;
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// One eventfd serves both sides: writes add to its counter, a read resets it.
    pub(super) fn channel() -> io::Result<(File, File)> {
        // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::new(
                io::Error::last_os_error().kind(),
                format!("eventfd for the loop's wake-up: {}", io::Error::last_os_error()),
            ));
        }
        // SAFETY: fd was just returned by eventfd and is owned by no one else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok((file.try_clone()?, file))
    }

    pub(super) const WAKE: &[u8] = &1u64.to_ne_bytes();
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::io;
    use std::os::unix::net::UnixStream;

    pub(super) fn channel() -> io::Result<(UnixStream, UnixStream)> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok((reader, writer))
    }

    pub(super) const WAKE: &[u8] = &[1];
}

#[cfg(any(target_os = "linux", target_os = "android"))]
type Channel = std::fs::File;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
type Channel = std::os::unix::net::UnixStream;

struct Shared {
    writer: Channel,
    stop: AtomicBool,
}

/// The loop's side of the wake-up channel.
pub(crate) struct Waker {
    shared: Arc<Shared>,
}

/// The reading side, registered with the loop as a source.
pub(crate) struct WakeReader {
    reader: Channel,
    shared: Arc<Shared>,
}

impl Waker {
    pub(crate) fn new() -> io::Result<(Waker, WakeReader)> {
        let (reader, writer) = imp::channel()?;
        let shared = Arc::new(Shared {
            writer,
            stop: AtomicBool::new(false),
        });
        Ok((
            Waker {
                shared: Arc::clone(&shared),
            },
            WakeReader { reader, shared },
        ))
    }

    pub(crate) fn handle(&self) -> LoopHandle {
        LoopHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl WakeReader {
    /// Empty the channel so that it stops being readable; true if a handle asked
    /// the loop to stop (the request is cleared).
    pub(crate) fn drain(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 64];
        loop {
            match self.reader.read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(self.shared.stop.swap(false, Ordering::AcqRel))
    }
}

impl AsFd for WakeReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

/// Wakes or stops an [`EventLoop`](crate::EventLoop) from any thread.
///
/// Get one with [`EventLoop::handle`](crate::EventLoop::handle). A blocked poll
/// returns at once; a loop that is busy sees the request at the end of its
/// current iteration.
///
/// ```
/// use evloop::EventLoop;
///
/// let mut lp: EventLoop = EventLoop::new()?;
/// let handle = lp.handle()?;
/// let stopper = std::thread::spawn(move || handle.stop());
/// lp.run(&mut ())?; // blocks until the other thread stops it
/// stopper.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl LoopHandle {
    /// Make the loop's current or next poll return now.
    pub fn wake(&self) {
        match (&self.shared.writer).write(imp::WAKE) {
            // Full means a wake-up is already pending, which is all we want.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::error!("waking the loop failed: {e}"),
        }
    }

    /// Ask [`EventLoop::run`](crate::EventLoop::run) to return, and wake it.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.wake();
    }
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}
