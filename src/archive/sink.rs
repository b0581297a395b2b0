//! Where encoded bytes go: straight into the output buffer, or through gzip or zstd.

use std::io::{self, Write};

use flate2::write::GzEncoder;

/// zstd level 3 (the library default): much faster than gzip and still smaller on audit JSON.
const ZSTD_LEVEL: i32 = 3;

/// Uncompressed bytes are staged up to this size before gzip sees them: deflate is much faster
/// on large writes than on the many small writes serializing one log object makes.
const GZIP_STAGE_BYTES: usize = 64 * 1024;

/// Output buffer capacity after a take, so refilling does not reallocate for every few logs.
const INITIAL_CAPACITY: usize = 256 * 1024;

/// The encoded output, optionally compressed.
pub(super) enum Sink {
    Plain(Vec<u8>),
    Gzip {
        /// Uncompressed bytes not yet handed to the encoder.
        stage: Vec<u8>,
        encoder: GzEncoder<Vec<u8>>,
    },
    Zstd {
        /// Uncompressed bytes not yet handed to the encoder.
        stage: Vec<u8>,
        encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    },
}

impl Sink {
    pub(super) fn plain() -> Self {
        Sink::Plain(Vec::with_capacity(INITIAL_CAPACITY))
    }

    pub(super) fn gzip() -> Self {
        Sink::Gzip {
            stage: Vec::with_capacity(GZIP_STAGE_BYTES * 2),
            // Fast level: throughput matters more than the last few percent of size.
            encoder: GzEncoder::new(
                Vec::with_capacity(INITIAL_CAPACITY),
                flate2::Compression::fast(),
            ),
        }
    }

    pub(super) fn zstd() -> Self {
        // Creating the context only fails when zstd cannot allocate it, like any allocation.
        let encoder =
            zstd::stream::write::Encoder::new(Vec::with_capacity(INITIAL_CAPACITY), ZSTD_LEVEL)
                .expect("zstd compression context");
        Sink::Zstd {
            stage: Vec::with_capacity(GZIP_STAGE_BYTES * 2),
            encoder,
        }
    }

    /// The buffer the encoders write uncompressed bytes into.
    pub(super) fn stage(&mut self) -> &mut Vec<u8> {
        match self {
            Sink::Plain(buf) => buf,
            Sink::Gzip { stage, .. } | Sink::Zstd { stage, .. } => stage,
        }
    }

    /// Hands staged bytes to the compressor once enough accumulated; called after each log.
    pub(super) fn maybe_compress(&mut self) -> io::Result<()> {
        if let Sink::Gzip { stage, encoder } = self
            && stage.len() >= GZIP_STAGE_BYTES
        {
            encoder.write_all(stage)?;
            stage.clear();
        }
        if let Sink::Zstd { stage, encoder } = self
            && stage.len() >= GZIP_STAGE_BYTES
        {
            encoder.write_all(stage)?;
            stage.clear();
        }
        Ok(())
    }

    /// Bytes ready to be taken (compressed bytes when compressing).
    pub(super) fn ready_len(&self) -> usize {
        match self {
            Sink::Plain(buf) => buf.len(),
            Sink::Gzip { encoder, .. } => encoder.get_ref().len(),
            Sink::Zstd { encoder, .. } => encoder.get_ref().len(),
        }
    }

    /// Moves the ready bytes out without copying them.
    pub(super) fn take_ready(&mut self) -> Vec<u8> {
        let out = match self {
            Sink::Plain(buf) => buf,
            Sink::Gzip { encoder, .. } => encoder.get_mut(),
            Sink::Zstd { encoder, .. } => encoder.get_mut(),
        };
        // The next buffer starts as large as this one grew, so it fills without reallocating.
        let capacity = out.capacity().max(INITIAL_CAPACITY);
        std::mem::replace(out, Vec::with_capacity(capacity))
    }

    /// Everything so far as complete bytes: a gzip member or zstd frame is ended and the next
    /// bytes start a new one — gzip and zstd files may hold several, read as one stream.
    pub(super) fn end_member(&mut self) -> io::Result<Vec<u8>> {
        let fresh = match self {
            Sink::Plain(_) => return Ok(self.take_ready()),
            Sink::Gzip { .. } => Sink::gzip(),
            Sink::Zstd { .. } => Sink::zstd(),
        };
        std::mem::replace(self, fresh).finish()
    }

    /// Flushes everything (the gzip or zstd trailer included) and returns the remaining bytes.
    pub(super) fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Sink::Plain(buf) => Ok(buf),
            Sink::Gzip { stage, mut encoder } => {
                encoder.write_all(&stage)?;
                encoder.finish()
            }
            Sink::Zstd { stage, mut encoder } => {
                encoder.write_all(&stage)?;
                encoder.finish()
            }
        }
    }
}
