//! Which open file an fd number names, and how to let go of a source whose
//! number names another file now.
//!
//! An fd number is only a name: closed behind the loop's back, it can be handed
//! to the next socket anyone opens. Before the loop closes a source, and when a
//! handler fails or a new source brings a number that is still registered, it
//! makes sure the number still names the source's file. How depends on the
//! backend ([`Backend::kernel_checks_identity`]):
//!
//! - **epoll** proves it for free: its entries are keyed by the open file *and*
//!   the number, so `EPOLL_CTL_DEL` (or `EPOLL_CTL_MOD`) by number succeeds only
//!   while the number names the registered file (`EBADF` once it is closed,
//!   `ENOENT` once it names another file). The unregister that `remove` does
//!   anyway is the proof; nothing is recorded at `add`.
//! - **poll and select** keep their own table by number, which cannot tell one
//!   file from another, and **kqueue** queues its changes until the next poll
//!   (and a `POLL_NULL` registration has no filter in the kernel at all), so an
//!   unregister's result proves nothing there. The loop records the source's
//!   [`FileId`] at `add` and compares it (one `fstat`).
//!
//! A source whose number names another file is never closed by the loop
//! ([`release`]).
//!
//! [`Backend::kernel_checks_identity`]: crate::Backend::kernel_checks_identity

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// A file's identity: the device and inode `fstat` reports for it. Two
/// descriptors name the same open file's object exactly when these agree (a
/// `dup` and its original do; a socket opened later under the same number
/// does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file `fd` names (`EBADF` if none).
    pub(crate) fn of(fd: RawFd) -> io::Result<FileId> {
        // SAFETY: an all-zero `stat` is a valid value of a plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one `stat` into the struct we own; any integer is a
        // valid fd argument (a bad one fails with EBADF).
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // The field types differ between platforms; both fit in 64 bits.
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }

    /// Whether `fd` still names this file.
    pub(crate) fn is_at(self, fd: RawFd) -> bool {
        FileId::of(fd).is_ok_and(|now| now == self)
    }
}

/// How the loop knows whether a registration's fd number still names its file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Identity {
    /// The kernel answered already (an unregister succeeded or failed).
    Proven(bool),
    /// The file recorded at `add`, to compare with what the number names now.
    Recorded(FileId),
}

impl Identity {
    /// Whether `fd` still names the registration's file.
    #[inline]
    pub(crate) fn holds_at(self, fd: RawFd) -> bool {
        match self {
            Identity::Proven(ours) => ours,
            Identity::Recorded(file) => file.is_at(fd),
        }
    }
}

/// Drop `source`, whose number `fd` no longer names its file, without closing
/// what the number names now. Returns the source back if that cannot be done yet.
///
/// If the number is free, a placeholder is put there first (`F_DUPFD` gives the
/// lowest free number at or above `fd`, atomically, so it either takes exactly
/// `fd` or leaves it alone): the source's drop then closes the placeholder, and
/// whatever else the source owns (an `Rc`'s count, buffers) is freed as usual.
/// If the number names another file, nothing can be done without closing it: the
/// source comes back, for the caller to keep until the number is free.
pub(crate) fn release(fd: RawFd, source: Box<dyn Any>) -> Result<(), Box<dyn Any>> {
    let Ok(placeholder) = UnixDatagram::unbound() else {
        return Err(source);
    };
    let Ok(placeholder_id) = FileId::of(placeholder.as_raw_fd()) else {
        return Err(source);
    };
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor of our own placeholder at the
    // lowest free number >= fd; it touches no other descriptor.
    let at = unsafe { libc::fcntl(placeholder.as_raw_fd(), libc::F_DUPFD_CLOEXEC, fd) };
    if at != fd {
        if at >= 0 {
            // SAFETY: `at` was just created above and is ours alone.
            unsafe { libc::close(at) };
        }
        return Err(source);
    }
    drop(source);
    // A source that does not close its fd (a `BorrowedFd`) left the placeholder.
    if placeholder_id.is_at(fd) {
        // SAFETY: `fd` still names our placeholder (same inode, which no other file
        // shares), created above and owned by nothing else.
        unsafe { libc::close(fd) };
    }
    Ok(())
}
