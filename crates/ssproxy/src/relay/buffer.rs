//! Bytes waiting to be written to one socket.

use std::io::{self, Write};

/// Above this many queued bytes a connection stops reading from the other side
/// (back-pressure), so each direction holds at most about this much plus one read.
pub const HIGH_WATER: usize = 256 * 1024;

/// The most one read straight into a queue asks for. Larger than the worker's
/// scratch: a bulk stream then wakes its process half as often per byte, which
/// measured cheaper than the 256 KiB reads (less switching between the processes
/// sharing a core) while the bytes still stay within a core's L2 between read,
/// seal and send.
pub const READ_LEN: usize = 512 * 1024;

/// Storage of a queue that is read into directly: back-pressure stops reads at
/// [`HIGH_WATER`], so this holds the queue plus one read; a queue that is written
/// out as fast as it fills starts again from the front and needs no compaction.
const HOT_STORAGE: usize = HIGH_WATER + READ_LEN;

/// Events in a row with little traffic after which a hot queue may give its storage back.
const COOL_DOWN: u8 = 8;

/// A queue written out from the front and filled at the back, either with bytes
/// copied in or by reading straight into its free room.
///
/// ```text
/// buf: [ sent | queued: start..end | gap | raw: raw_start..raw_end | free ]
/// ```
///
/// *Raw* bytes were read but not yet transformed (ciphertext waiting to be opened,
/// typically the start of a chunk whose rest has not arrived); opening them writes
/// plaintext at `end`, which never overtakes `raw_start` since plaintext is shorter than
/// its ciphertext. All of `buf` is initialized, so reads can go straight into its free
/// room without `unsafe`; the storage is zeroed only when it is allocated or grown.
///
/// An idle connection holds no heap memory here: a drained queue gives its storage back,
/// except while its connection is moving bulk data ([`Pending::note_read`]), so that a
/// busy stream does not allocate and zero its storage again for every read.
#[derive(Default)]
pub struct Pending {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    raw_start: usize,
    raw_end: usize,
    hot: bool,
    cool: u8,
}

/// Reads of at least this much (in one event) make a queue hot: read into directly.
pub const HOT_READ: usize = 16 * 1024;

impl Pending {
    /// Queued bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether the other side should stop being read for now.
    pub fn is_full(&self) -> bool {
        self.len() + self.raw_len() >= HIGH_WATER
    }

    /// The queued bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn raw_len(&self) -> usize {
        self.raw_end - self.raw_start
    }

    /// Nothing queued and no raw bytes held.
    fn is_drained(&self) -> bool {
        self.is_empty() && self.raw_len() == 0
    }

    /// Whether reads should go straight into this queue (see [`Pending::note_read`]).
    pub fn is_hot(&self) -> bool {
        self.hot
    }

    /// Record how much one event read into this queue: large reads make it hot (read
    /// straight into, storage kept while drained); a run of small ones, or end-of-file
    /// (`eof`), cools it down again.
    pub fn note_read(&mut self, bytes: usize, eof: bool) {
        if eof {
            self.hot = false;
            self.cool = 0;
        } else if bytes >= HOT_READ {
            self.hot = true;
            self.cool = 0;
        } else if self.hot {
            self.cool += 1;
            if self.cool >= COOL_DOWN {
                self.hot = false;
                self.cool = 0;
            }
        }
    }

    /// Free room after the raw bytes (or the queued ones), at least `n` bytes:
    /// compacts or grows the storage as needed. A hot queue grows to its full size at
    /// once, so that it is allocated and zeroed once per stream.
    pub fn room(&mut self, n: usize) -> &mut [u8] {
        if self.buf.len() - self.raw_end < n {
            self.compact();
        }
        let used = self.raw_end;
        if self.buf.len() - used < n {
            let want = if self.hot {
                (used + n).max(HOT_STORAGE)
            } else {
                (used + n).max(2 * self.buf.len())
            };
            if self.buf.is_empty() {
                // Zeroed pages straight from the allocator, not a memset.
                self.buf = vec![0; want];
            } else {
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[used..]
    }

    /// Move the queued and raw bytes to the front, closing the gap between them.
    fn compact(&mut self) {
        if self.start == 0 && self.end == self.raw_start {
            return;
        }
        let queued = self.len();
        let raw = self.raw_len();
        self.buf.copy_within(self.start..self.end, 0);
        self.buf.copy_within(self.raw_start..self.raw_end, queued);
        self.start = 0;
        self.end = queued;
        self.raw_start = queued;
        self.raw_end = queued + raw;
    }

    /// Queue `n` bytes that were written into [`Pending::room`].
    pub fn commit(&mut self, n: usize) {
        debug_assert_eq!(self.raw_len(), 0, "queued bytes must not land behind raw ones");
        self.end += n;
        self.raw_start = self.end;
        self.raw_end = self.end;
    }

    /// Keep `n` bytes that were read into [`Pending::room`] as raw, to be transformed by
    /// [`Pending::transform_raw`].
    pub fn add_raw(&mut self, n: usize) {
        self.raw_end += n;
    }

    /// Copy `data` in as raw bytes.
    pub fn push_raw(&mut self, data: &[u8]) {
        self.room(data.len())[..data.len()].copy_from_slice(data);
        self.add_raw(data.len());
    }

    /// Run `f` over the storage up to the end of the raw bytes, with the index where
    /// plaintext is to be written (the end of the queued bytes) and the index of the first
    /// raw byte; `f` advances both over what it transformed. Leftover raw bytes stay.
    pub fn transform_raw<E>(
        &mut self,
        f: impl FnOnce(&mut [u8], &mut usize, &mut usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let result = f(&mut self.buf[..self.raw_end], &mut self.end, &mut self.raw_start);
        debug_assert!(self.end <= self.raw_start && self.raw_start <= self.raw_end);
        if self.raw_start == self.raw_end {
            self.raw_start = self.end;
            self.raw_end = self.end;
        }
        result
    }

    /// Append through a `Vec` (for producers that write into one: handshakes, headers,
    /// small transfers). Costs a zeroing of whatever room it uses beyond the storage's
    /// end, so it is not for the bulk path.
    pub fn append_with<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let raw = (self.raw_len() > 0).then(|| self.buf[self.raw_start..self.raw_end].to_vec());
        let size = self.buf.len();
        self.buf.truncate(self.end);
        let result = f(&mut self.buf);
        self.end = self.buf.len();
        self.raw_start = self.end;
        self.raw_end = self.end;
        if self.buf.len() < size {
            self.buf.resize(size, 0);
        }
        if let Some(raw) = raw {
            self.push_raw(&raw);
        }
        result
    }

    /// Append `data` to the queued bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.append_with(|v| v.extend_from_slice(data));
    }

    /// Drop `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.is_drained() {
            self.start = 0;
            self.end = 0;
            self.raw_start = 0;
            self.raw_end = 0;
        }
    }

    /// Give back the storage if nothing is queued or held, unless the queue is hot.
    pub fn release(&mut self) {
        if !self.hot {
            self.release_now();
        }
    }

    /// Give back the storage if nothing is queued or held (a connection going idle).
    pub fn release_now(&mut self) {
        if self.is_drained() {
            *self = Pending::default();
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
        p.push(b"hello world");
        let mut sink = Limited {
            got: Vec::new(),
            room: 5,
        };
        assert!(!p.flush_to(&mut sink).unwrap());
        assert_eq!(p.as_slice(), b" world");
        p.push(b"!");
        sink.room = 100;
        assert!(p.flush_to(&mut sink).unwrap());
        assert_eq!(sink.got, b"hello world!");
        assert!(p.is_empty());
    }

    #[test]
    fn drained_cold_buffer_gives_memory_back() {
        let mut p = Pending::default();
        p.push(&vec![0; HIGH_WATER]);
        assert!(p.is_full());
        p.consume(HIGH_WATER);
        p.release();
        assert_eq!(p.buf.capacity(), 0);
    }

    #[test]
    fn hot_buffer_is_kept_until_it_cools_down() {
        let mut p = Pending::default();
        p.note_read(HOT_READ, false);
        let room = p.room(1000);
        room[..3].copy_from_slice(b"abc");
        p.commit(3);
        assert_eq!(p.buf.len(), HOT_STORAGE);
        p.consume(3);
        p.release();
        assert_eq!(p.buf.len(), HOT_STORAGE);
        for _ in 0..COOL_DOWN {
            p.note_read(10, false);
        }
        p.release();
        assert_eq!(p.buf.capacity(), 0);
    }

    #[test]
    fn raw_bytes_are_transformed_behind_the_queue_and_compacted() {
        let mut p = Pending::default();
        p.push(b"queued");
        p.push_raw(b"xxABCDEFyy");
        // A transform that takes "xx" + 4 bytes as one unit, leaving 2 bytes of plaintext.
        let step = |buf: &mut [u8], out: &mut usize, raw: &mut usize| -> Result<(), ()> {
            while buf.len() - *raw >= 6 {
                let (o, r) = (*out, *raw);
                buf.copy_within(r + 2..r + 4, o);
                *out += 2;
                *raw += 6;
            }
            Ok(())
        };
        p.transform_raw(step).unwrap();
        assert_eq!(p.as_slice(), b"queuedAB");
        assert_eq!(p.raw_len(), 4);
        p.consume(8);
        assert!(p.is_empty());
        // Still holding raw bytes: not released.
        p.release_now();
        assert_eq!(p.raw_len(), 4);
        p.push_raw(b"ZZ");
        p.transform_raw(step).unwrap();
        assert_eq!(p.as_slice(), b"yy");
        assert_eq!(p.raw_len(), 0);
        p.push(b"!");
        assert_eq!(p.as_slice(), b"yy!");
        // Compaction keeps the order of queued and raw bytes.
        p.consume(1);
        p.push_raw(b"raw");
        let free = p.buf.len() - p.raw_end;
        p.room(free + 1);
        assert_eq!(p.as_slice(), b"y!");
        assert_eq!(&p.buf[p.raw_start..p.raw_end], b"raw");
        p.push(b"?");
        assert_eq!(p.as_slice(), b"y!?");
        assert_eq!(&p.buf[p.raw_start..p.raw_end], b"raw");
    }
}
