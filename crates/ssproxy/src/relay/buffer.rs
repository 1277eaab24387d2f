//! Bytes waiting to be written to one socket.

use std::io::{self, Write};

/// Above this many queued bytes a connection stops reading from the other side
/// (back-pressure), so each direction holds at most about this much plus one read.
pub const HIGH_WATER: usize = 256 * 1024;

/// A buffer that is written out from the front and appended to at the back.
///
/// An idle connection holds no heap memory here: the storage is released once it
/// has been drained, unless it is small enough to be worth keeping.
#[derive(Default)]
pub struct Pending {
    buf: Vec<u8>,
    start: usize,
}

/// Drained buffers larger than this give their memory back.
const KEEP_CAPACITY: usize = 32 * 1024;

impl Pending {
    /// Queued bytes.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Whether the other side should stop being read for now.
    pub fn is_full(&self) -> bool {
        self.len() >= HIGH_WATER
    }

    /// The queued bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The vector to append to (compacted first when the consumed front is large).
    pub fn tail(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// Drop `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// Give back all memory (a connection going idle).
    pub fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Write as much as the socket takes. `Ok(true)` when everything went out.
    pub fn flush_to(&mut self, mut sink: impl Write) -> io::Result<bool> {
        while !self.is_empty() {
            match sink.write(self.as_slice()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes in all, then would block.
    struct Limited {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Limited {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.room).min(3);
            self.got.extend_from_slice(&data[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_the_rest_in_order() {
        let mut p = Pending::default();
        p.tail().extend_from_slice(b"hello world");
        let mut sink = Limited {
            got: Vec::new(),
            room: 5,
        };
        assert!(!p.flush_to(&mut sink).unwrap());
        assert_eq!(p.as_slice(), b" world");
        p.tail().extend_from_slice(b"!");
        sink.room = 100;
        assert!(p.flush_to(&mut sink).unwrap());
        assert_eq!(sink.got, b"hello world!");
        assert!(p.is_empty());
    }

    #[test]
    fn drained_large_buffer_gives_memory_back() {
        let mut p = Pending::default();
        p.tail().resize(HIGH_WATER, 0);
        assert!(p.is_full());
        p.consume(HIGH_WATER);
        assert_eq!(p.buf.capacity(), 0);
    }
}
