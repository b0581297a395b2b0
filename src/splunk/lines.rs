//! Splits a chunked byte stream into lines without copying lines that sit inside one chunk.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use bytes::{Bytes, BytesMut};

/// Incremental newline splitter with a cap on line length, so a hostile or broken peer cannot make
/// memory grow without bound.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    pending: BytesMut,
    ready: VecDeque<Bytes>,
    max_line: usize,
}

/// A line grew past the splitter's cap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

impl LineSplitter {
    /// A splitter refusing lines longer than `max_line` bytes.
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            ready: VecDeque::new(),
            max_line,
        }
    }

    /// Feeds one chunk; complete lines become available through [`LineSplitter::next_line`].
    pub(crate) fn push(&mut self, mut chunk: Bytes) -> Result<(), LineTooLong> {
        while let Some(pos) = memchr::memchr(b'\n', &chunk) {
            let head = chunk.split_to(pos + 1);
            let line = if self.pending.is_empty() {
                head.slice(..pos)
            } else {
                if self.pending.len() + pos > self.max_line {
                    return Err(LineTooLong);
                }
                self.pending.extend_from_slice(&head[..pos]);
                self.pending.split().freeze()
            };
            if line.len() > self.max_line {
                return Err(LineTooLong);
            }
            self.ready.push_back(trim_cr(line));
        }
        if self.pending.len() + chunk.len() > self.max_line {
            return Err(LineTooLong);
        }
        self.pending.extend_from_slice(&chunk);
        Ok(())
    }

    /// Whether every line split by [`LineSplitter::push`] was taken.
    pub(crate) fn is_drained(&self) -> bool {
        self.ready.is_empty()
    }

    /// The next complete line, without its line terminator.
    pub(crate) fn next_line(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Feeds one chunk and hands each complete line to `line` at once, borrowed from the chunk
    /// when it lies inside it: no allocation or reference count per line. Lines split earlier by
    /// [`LineSplitter::push`] must have been taken first. When `line` breaks, the rest of the
    /// chunk is dropped (the caller is done with the stream) and its value is returned.
    pub(crate) fn split<B>(
        &mut self,
        chunk: &[u8],
        mut line: impl FnMut(&[u8]) -> ControlFlow<B>,
    ) -> Result<Option<B>, LineTooLong> {
        debug_assert!(self.ready.is_empty(), "lines from push() not taken");
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            let flow = if self.pending.is_empty() {
                if end - start > self.max_line {
                    return Err(LineTooLong);
                }
                line(trim_cr_slice(&chunk[start..end]))
            } else {
                if self.pending.len() + end - start > self.max_line {
                    return Err(LineTooLong);
                }
                self.pending.extend_from_slice(&chunk[start..end]);
                let flow = line(trim_cr_slice(&self.pending));
                self.pending.clear();
                flow
            };
            if let ControlFlow::Break(value) = flow {
                return Ok(Some(value));
            }
            start = end + 1;
        }
        let rest = &chunk[start..];
        if self.pending.len() + rest.len() > self.max_line {
            return Err(LineTooLong);
        }
        self.pending.extend_from_slice(rest);
        Ok(None)
    }

    /// At end of input: the unterminated last line, if any bytes are left.
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            None
        } else {
            Some(trim_cr(self.pending.split().freeze()))
        }
    }
}

fn trim_cr_slice(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_cr(mut line: Bytes) -> Bytes {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut LineSplitter) -> Vec<String> {
        std::iter::from_fn(|| s.next_line())
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn joins_lines_across_chunk_boundaries() {
        let mut s = LineSplitter::new(1024);
        s.push(Bytes::from_static(b"{\"a\":1}\n{\"b\"")).unwrap();
        assert_eq!(drain(&mut s), ["{\"a\":1}"]);
        s.push(Bytes::from_static(b":2")).unwrap();
        assert!(drain(&mut s).is_empty());
        s.push(Bytes::from_static(b"}\r\n\n{\"c\":3}")).unwrap();
        assert_eq!(drain(&mut s), ["{\"b\":2}", ""]);
        assert_eq!(s.finish().as_deref(), Some(&b"{\"c\":3}"[..]));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let text = b"one\ntwo\r\nthree\n\nfour";
        for cut in 0..text.len() {
            let mut s = LineSplitter::new(64);
            s.push(Bytes::copy_from_slice(&text[..cut])).unwrap();
            s.push(Bytes::copy_from_slice(&text[cut..])).unwrap();
            let mut lines = drain(&mut s);
            lines.extend(s.finish().map(|l| String::from_utf8(l.to_vec()).unwrap()));
            assert_eq!(lines, ["one", "two", "three", "", "four"], "cut at {cut}");
        }
    }

    #[test]
    fn split_hands_over_the_same_lines_at_every_split_point() {
        let text = b"one\ntwo\r\nthree\n\nfour";
        for cut in 0..text.len() {
            let mut s = LineSplitter::new(64);
            let mut lines = Vec::new();
            for part in [&text[..cut], &text[cut..]] {
                let none = s.split(part, |l| {
                    lines.push(String::from_utf8(l.to_vec()).unwrap());
                    ControlFlow::<()>::Continue(())
                });
                assert_eq!(none, Ok(None));
            }
            lines.extend(s.finish().map(|l| String::from_utf8(l.to_vec()).unwrap()));
            assert_eq!(lines, ["one", "two", "three", "", "four"], "cut at {cut}");
        }
    }

    #[test]
    fn split_stops_where_the_caller_breaks_and_caps_line_length() {
        let mut s = LineSplitter::new(8);
        let mut seen = 0;
        let stopped = s.split(b"a\nb\nc\n", |l| {
            seen += 1;
            if l == b"b" {
                ControlFlow::Break("at b")
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((stopped, seen), (Ok(Some("at b")), 2));
        let go_on = |_: &[u8]| ControlFlow::<()>::Continue(());
        assert_eq!(
            LineSplitter::new(8).split(b"0123456789\n", go_on),
            Err(LineTooLong)
        );
        let mut s = LineSplitter::new(8);
        assert_eq!(s.split(b"0123", go_on), Ok(None));
        assert_eq!(s.split(b"45678\n", go_on), Err(LineTooLong));
        let mut s = LineSplitter::new(8);
        assert_eq!(s.split(b"0123", go_on), Ok(None));
        assert_eq!(s.split(b"45678", go_on), Err(LineTooLong));
    }

    #[test]
    fn refuses_over_long_lines() {
        let mut s = LineSplitter::new(8);
        assert_eq!(
            s.push(Bytes::from_static(b"0123456789\n")),
            Err(LineTooLong)
        );
        let mut s = LineSplitter::new(8);
        s.push(Bytes::from_static(b"0123")).unwrap();
        assert_eq!(s.push(Bytes::from_static(b"45678")), Err(LineTooLong));
        let mut s = LineSplitter::new(8);
        s.push(Bytes::from_static(b"0123")).unwrap();
        assert_eq!(s.push(Bytes::from_static(b"45678\n")), Err(LineTooLong));
        let mut s = LineSplitter::new(8);
        s.push(Bytes::from_static(b"01234567\n")).unwrap();
        assert_eq!(drain(&mut s), ["01234567"]);
    }
}
