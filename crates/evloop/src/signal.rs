//! Signals as loop events: signalfd on Linux, a self-pipe elsewhere.
//!
//! Both are sources the loop registers like a socket: when a watched signal
//! arrives, the source becomes readable and the loop calls the signal handler
//! with the signal's number, from the loop's thread, where it may do anything
//! (unlike a real signal handler).
//!
//! **signalfd** (Linux) needs the signals *blocked*: the source blocks
//! them in the calling thread, and threads spawned afterwards inherit the mask.
//! Set signals up before spawning threads, or a process-directed signal may be
//! delivered to a thread that does not block it, where its default action runs.
//! Dropping the source restores the previous mask for those signals.
//!
//! **The self-pipe** installs a process-wide handler (through
//! `signal-hook-registry`) that writes the signal's number into a non-blocking
//! socket pair; it needs no blocking and works whatever thread receives the signal.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// A signal number, such as `libc::SIGTERM`.
pub type Signal = libc::c_int;

/// A source that turns signals into readability, and reads back which arrived.
pub(crate) trait SignalSource: AsFd {
    /// Read every pending signal, in arrival order, into `out`.
    fn read_signals(&mut self, out: &mut Vec<Signal>) -> io::Result<()>;
}

fn invalid(signal: Signal, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("signal {signal}: {why}"))
}

/// Signals this API refuses: the ones that cannot be caught, and the ones that
/// mean the program itself faulted (turning those into events would loop forever).
fn check_catchable(signal: Signal) -> io::Result<()> {
    const FORBIDDEN: [Signal; 6] = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
    ];
    if signal <= 0 || signal >= 65 {
        return Err(invalid(signal, "not a signal number"));
    }
    if FORBIDDEN.contains(&signal) {
        return Err(invalid(signal, "cannot be handled as a loop event"));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use self::linux::SignalFd;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod linux {
    use super::*;
    use std::fs::File;
    use std::mem::MaybeUninit;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A signalfd for a set of signals, which it keeps blocked while it lives.
    pub(crate) struct SignalFd {
        file: File,
        /// The signals this source blocked (those not blocked before it).
        blocked_here: Vec<Signal>,
    }

    fn sigset(signals: &[Signal]) -> libc::sigset_t {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only
        // writes into that initialised set, and the numbers were checked.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &s in signals {
                libc::sigaddset(set.as_mut_ptr(), s);
            }
            set.assume_init()
        }
    }

    fn change_mask(how: libc::c_int, signals: &[Signal]) -> io::Result<libc::sigset_t> {
        let set = sigset(signals);
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid for the call; pthread_sigmask writes `old`.
        let rc = unsafe { libc::pthread_sigmask(how, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded, so it filled `old`.
        Ok(unsafe { old.assume_init() })
    }

    impl SignalFd {
        pub(crate) fn new(signals: &[Signal]) -> io::Result<SignalFd> {
            for &s in signals {
                check_catchable(s)?;
            }
            let old = change_mask(libc::SIG_BLOCK, signals)?;
            let blocked_here: Vec<Signal> = signals
                .iter()
                .copied()
                // SAFETY: `old` is an initialised set and the number was checked.
                .filter(|&s| unsafe { libc::sigismember(&old, s) } == 0)
                .collect();
            let set = sigset(signals);
            // SAFETY: -1 asks for a new fd; `set` is an initialised signal set.
            let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
            if fd < 0 {
                let err = io::Error::last_os_error();
                let _ = change_mask(libc::SIG_UNBLOCK, &blocked_here);
                return Err(io::Error::new(
                    err.kind(),
                    format!("signalfd for signals {signals:?}: {err}"),
                ));
            }
            // SAFETY: fd was just returned by signalfd and is owned by no one else.
            let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(SignalFd { file, blocked_here })
        }
    }

    impl AsFd for SignalFd {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.file.as_fd()
        }
    }

    impl SignalSource for SignalFd {
        fn read_signals(&mut self, out: &mut Vec<Signal>) -> io::Result<()> {
            const INFO: usize = size_of::<libc::signalfd_siginfo>();
            let mut buf = [0u8; INFO * 16];
            loop {
                match self.file.read(&mut buf) {
                    Ok(n) => {
                        // Each record starts with ssi_signo, a u32.
                        for record in buf[..n].chunks_exact(INFO) {
                            let signo = u32::from_ne_bytes(record[..4].try_into().expect("4 bytes"));
                            out.push(signo as Signal);
                        }
                        if n < buf.len() {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    impl Drop for SignalFd {
        fn drop(&mut self) {
            // Drain first: signals still pending would otherwise run their default
            // action (often: terminate) the moment they are unblocked.
            let mut pending = Vec::new();
            let _ = self.read_signals(&mut pending);
            if !pending.is_empty() {
                log::debug!("signals {pending:?} arrived after their source was removed; discarded");
            }
            if let Err(e) = change_mask(libc::SIG_UNBLOCK, &self.blocked_here) {
                log::error!("restoring the signal mask for {:?}: {e}", self.blocked_here);
            }
        }
    }
}

/// The portable source: a process-wide handler writes each signal's number into
/// a socket pair that the loop reads. (On Linux only the tests use it, so that the
/// code other platforms run is exercised here too.)
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) struct SelfPipe {
    reader: UnixStream,
    ids: Vec<signal_hook_registry::SigId>,
}

#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
impl SelfPipe {
    pub(crate) fn new(signals: &[Signal]) -> io::Result<SelfPipe> {
        for &s in signals {
            check_catchable(s)?;
        }
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let writer = std::sync::Arc::new(writer);
        let mut ids = Vec::with_capacity(signals.len());
        for &signal in signals {
            let writer = std::sync::Arc::clone(&writer);
            let byte = [signal as u8];
            let action = move || {
                // A full pipe drops the byte: the loop is behind, and it will see
                // at least one of this signal's earlier bytes.
                let _ = std::io::Write::write(&mut &*writer, &byte);
            };
            // SAFETY: the action only calls write(2) on a non-blocking socket, which is
            // async-signal-safe; it allocates nothing and takes no lock.
            match unsafe { signal_hook_registry::register(signal, action) } {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        signal_hook_registry::unregister(id);
                    }
                    return Err(io::Error::new(
                        e.kind(),
                        format!("installing a handler for signal {signal}: {e}"),
                    ));
                }
            }
        }
        Ok(SelfPipe { reader, ids })
    }
}

impl AsFd for SelfPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

impl SignalSource for SelfPipe {
    fn read_signals(&mut self, out: &mut Vec<Signal>) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            match self.reader.read(&mut buf) {
                Ok(n) => {
                    out.extend(buf[..n].iter().map(|&b| b as Signal));
                    if n < buf.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SelfPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncatchable_and_fault_signals_are_refused() {
        for s in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, -3, 200] {
            assert_eq!(
                SelfPipe::new(&[s]).err().map(|e| e.kind()),
                Some(io::ErrorKind::InvalidInput),
                "signal {s}"
            );
        }
    }

    /// The portable path, through the loop, as BSD and macOS run it.
    #[test]
    fn self_pipe_delivers_signals_through_the_loop() {
        let mut lp: crate::EventLoop<Vec<Signal>> = crate::EventLoop::new().unwrap();
        let pipe = SelfPipe::new(&[libc::SIGCHLD]).unwrap();
        let token = lp
            .add_signal_source(pipe, |cx, signal| {
                cx.data.push(signal);
                cx.lp.stop();
            })
            .unwrap();
        // SAFETY: raise has no preconditions; SIGCHLD now has our handler.
        assert_eq!(unsafe { libc::raise(libc::SIGCHLD) }, 0);
        let mut got = Vec::new();
        lp.run(&mut got).unwrap();
        assert_eq!(got, [libc::SIGCHLD]);
        lp.remove(token).unwrap();
    }

    #[test]
    fn self_pipe_reports_a_raised_signal() {
        let mut pipe = SelfPipe::new(&[libc::SIGUSR2]).unwrap();
        // SAFETY: raise sends a signal to the calling thread; SIGUSR2 now has our handler.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        let mut got = Vec::new();
        pipe.read_signals(&mut got).unwrap();
        assert_eq!(got, [libc::SIGUSR2]);
    }
}
