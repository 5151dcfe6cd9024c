//! Request bodies, held whole before a worker is taken: in memory up to
//! `--body-buffer-size`, in an anonymous temporary file beyond it, so the
//! master's memory stays bounded however many large uploads are in flight.
//!
//! The file is created with `tempfile::tempfile_in`, which unlinks it at
//! once: it has no name to leak, and the disk space is returned when the
//! last handle closes, that is when the request is done (or the master
//! dies). A spooled body is read with positioned reads (`read_at`), so the
//! same body can be sent again when a worker connection turns out closed
//! before anything was sent.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read from a spool file per frame sent to a worker.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes gathered before one write to the spool file.
const WRITE_CHUNK: usize = 64 * 1024;

/// Where and from what size request bodies go to disk.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Bodies up to this many bytes stay in memory.
    pub memory_limit: usize,
    /// Directory of the temporary files (the system's temp dir when None).
    pub directory: Option<PathBuf>,
}

/// A complete request body.
#[derive(Debug, Clone)]
pub enum Spooled {
    Memory(Bytes),
    File { file: Arc<File>, len: u64 },
}

impl Spooled {
    pub fn empty() -> Self {
        Spooled::Memory(Bytes::new())
    }

    pub fn len(&self) -> u64 {
        match self {
            Spooled::Memory(bytes) => bytes.len() as u64,
            Spooled::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A body that sends these bytes to a worker, from the start.
    pub fn body(&self) -> WorkerBody {
        match self {
            Spooled::Memory(bytes) => WorkerBody::Memory(Some(bytes.clone())),
            Spooled::File { file, len } => WorkerBody::File {
                file: file.clone(),
                offset: 0,
                len: *len,
                reading: None,
            },
        }
    }
}

/// Collects a body as it arrives.
pub struct SpoolWriter {
    config: Arc<SpoolConfig>,
    memory: BytesMut,
    file: Option<Arc<File>>,
    written: u64,
}

impl SpoolWriter {
    pub fn new(config: Arc<SpoolConfig>) -> Self {
        Self {
            config,
            memory: BytesMut::new(),
            file: None,
            written: 0,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.written + self.memory.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data`; moves to disk once past the memory limit.
    pub async fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.memory.extend_from_slice(data);
        let spill = match self.file {
            Some(_) => self.memory.len() >= WRITE_CHUNK,
            None => self.memory.len() > self.config.memory_limit,
        };
        if spill {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.memory.is_empty() {
            return Ok(());
        }
        let file = match &self.file {
            Some(file) => file.clone(),
            None => {
                let directory = self.config.directory.clone();
                let file = blocking(move || match directory {
                    Some(dir) => tempfile::tempfile_in(dir),
                    None => tempfile::tempfile(),
                })
                .await?;
                let file = Arc::new(file);
                self.file = Some(file.clone());
                file
            }
        };
        let data = self.memory.split().freeze();
        let len = data.len() as u64;
        blocking(move || (&*file).write_all(&data)).await?;
        self.written += len;
        // The buffer's allocation goes back to the allocator instead of
        // staying as large as the memory limit for the rest of the upload.
        if self.memory.capacity() > WRITE_CHUNK * 2 {
            self.memory = BytesMut::new();
        }
        Ok(())
    }

    /// The complete body.
    pub async fn finish(mut self) -> std::io::Result<Spooled> {
        if self.file.is_none() {
            return Ok(Spooled::Memory(self.memory.freeze()));
        }
        self.flush().await?;
        let len = self.written;
        Ok(Spooled::File {
            file: self.file.take().expect("spilled"),
            len,
        })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)))
}

/// The request body sent to a worker: whole, of a known length.
pub enum WorkerBody {
    Memory(Option<Bytes>),
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
        reading: Option<JoinHandle<std::io::Result<Vec<u8>>>>,
    },
}

impl WorkerBody {
    pub fn empty() -> Self {
        WorkerBody::Memory(None)
    }
}

impl From<Bytes> for WorkerBody {
    fn from(bytes: Bytes) -> Self {
        WorkerBody::Memory(Some(bytes))
    }
}

impl Body for WorkerBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            WorkerBody::Memory(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            WorkerBody::File {
                file,
                offset,
                len,
                reading,
            } => {
                if *offset >= *len {
                    return Poll::Ready(None);
                }
                let task = reading.get_or_insert_with(|| {
                    let file = file.clone();
                    let at = *offset;
                    let want = (*len - at).min(READ_CHUNK as u64) as usize;
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; want];
                        file.read_exact_at(&mut buf, at)?;
                        Ok(buf)
                    })
                });
                let result = ready!(Pin::new(task).poll(cx));
                *reading = None;
                let data = match result {
                    Ok(Ok(data)) => data,
                    Ok(Err(err)) => return Poll::Ready(Some(Err(err))),
                    Err(err) => return Poll::Ready(Some(Err(std::io::Error::other(err)))),
                };
                *offset += data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            WorkerBody::Memory(bytes) => bytes.as_ref().is_none_or(|b| b.is_empty()),
            WorkerBody::File { offset, len, .. } => offset >= len,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            WorkerBody::Memory(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            WorkerBody::File { offset, len, .. } => SizeHint::with_exact(len - offset),
        }
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn config(limit: usize) -> Arc<SpoolConfig> {
        Arc::new(SpoolConfig {
            memory_limit: limit,
            directory: None,
        })
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let mut w = SpoolWriter::new(config(10));
        w.push(b"hello").await.unwrap();
        let body = w.finish().await.unwrap();
        assert!(matches!(body, Spooled::Memory(_)));
        let bytes = body.body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn a_large_body_goes_to_a_file_and_reads_back_whole_twice() {
        let mut w = SpoolWriter::new(config(1000));
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let chunk = vec![(i % 251) as u8; 997];
            expected.extend_from_slice(&chunk);
            w.push(&chunk).await.unwrap();
        }
        let body = w.finish().await.unwrap();
        assert!(matches!(body, Spooled::File { .. }));
        assert_eq!(body.len(), expected.len() as u64);
        for _ in 0..2 {
            let b = body.body();
            assert_eq!(b.size_hint().exact(), Some(expected.len() as u64));
            let bytes = b.collect().await.unwrap().to_bytes();
            assert!(bytes[..] == expected[..]);
        }
    }
}
