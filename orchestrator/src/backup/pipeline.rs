//! Streams to and from the bucket, never staged whole on disk or in memory: a backup
//! tool's output is cut into parts of `part_size` bytes, each compressed (and sealed)
//! on a blocking thread and uploaded as its own object, up to `concurrency` parts at
//! once; a restore downloads up to `concurrency` parts ahead, checks each one's
//! SHA-256, opens and decompresses it in parallel, and writes them in order. Memory
//! stays near `part_size` × (`concurrency` + 1) on each side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::manifest::{Layout, Part};
use super::parts::{decode, encode, sha256_hex, EncryptionKey, PartError};
use super::store::{ObjectStore, StoreError};

/// How parts are made and moved.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub part_size: usize,
    pub concurrency: usize,
    pub compression_level: i32,
    pub key: Option<Arc<EncryptionKey>>,
}

/// Bytes moved so far, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Stream bytes read from the tool (upload) or written to the consumer (download).
    pub raw: AtomicU64,
    /// Bytes stored in, or fetched from, the bucket.
    pub stored: AtomicU64,
    pub parts: AtomicU64,
}

impl Progress {
    pub fn raw(&self) -> u64 {
        self.raw.load(Ordering::Relaxed)
    }
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
}

/// Why a stream did not make it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("reading the backup stream: {0}")]
    Read(String),
    #[error("writing the restored stream: {0}")]
    Write(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("part {name}: {error}")]
    Part { name: String, error: PartError },
    #[error(
        "part {name}: checksum {got} where the manifest says {want} (the object was altered or truncated)"
    )]
    Checksum { name: String, want: String, got: String },
    #[error("part {name}: {got} bytes stored where the manifest says {want}")]
    Size { name: String, want: u64, got: u64 },
}

/// Reads up to `size` bytes (less only at the end of the stream).
async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R, size: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    while filled < size {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Puts with a few attempts (the SDK retries too; a part is worth more).
async fn put_with_retries<S: ObjectStore>(store: &S, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match store.put(key, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 2 => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(key, attempt, error = %e, "part upload failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
        }
    }
}

/// Uploads everything `reader` yields as parts under `prefix`; returns them in order.
/// An empty stream is one empty part (a restore then knows the stream was empty).
pub async fn upload<S: ObjectStore, R: AsyncRead + Unpin + Send>(
    store: Arc<S>,
    prefix: &str,
    reader: R,
    settings: &PipelineSettings,
    progress: Arc<Progress>,
) -> Result<Vec<Part>, PipelineError> {
    let part_size = settings.part_size.max(1);
    let chunks =
        futures::stream::try_unfold((reader, 0usize, false), move |(mut reader, index, ended)| async move {
            if ended {
                return Ok(None);
            }
            let chunk =
                read_chunk(&mut reader, part_size).await.map_err(|e| PipelineError::Read(e.to_string()))?;
            if chunk.is_empty() && index > 0 {
                return Ok(None);
            }
            let last = chunk.len() < part_size;
            Ok(Some(((index, chunk), (reader, index + 1, last))))
        });
    chunks
        .map_ok(|(index, chunk)| {
            let (store, progress, settings) = (store.clone(), progress.clone(), settings.clone());
            let name = Layout::part_name(index);
            let key = format!("{prefix}{name}");
            async move {
                let raw_bytes = chunk.len() as u64;
                progress.raw.fetch_add(raw_bytes, Ordering::Relaxed);
                let level = settings.compression_level;
                let (stored, sha256) = tokio::task::spawn_blocking(move || {
                    encode(&chunk, level, settings.key.as_deref()).map(|stored| {
                        let sha = sha256_hex(&stored);
                        (stored, sha)
                    })
                })
                .await
                .map_err(|e| PipelineError::Part {
                    name: name.clone(),
                    error: PartError::Compress(format!("the compression task stopped: {e}")),
                })?
                .map_err(|error| PipelineError::Part { name: name.clone(), error })?;
                let stored_bytes = stored.len() as u64;
                put_with_retries(store.as_ref(), &key, stored).await?;
                progress.stored.fetch_add(stored_bytes, Ordering::Relaxed);
                progress.parts.fetch_add(1, Ordering::Relaxed);
                Ok(Part { name, raw_bytes, stored_bytes, sha256 })
            }
        })
        .try_buffered(settings.concurrency.max(1))
        .try_collect()
        .await
}

/// Fetches one part and checks it against its manifest entry.
async fn fetch_checked<S: ObjectStore>(
    store: &S,
    prefix: &str,
    part: &Part,
) -> Result<Vec<u8>, PipelineError> {
    let stored = store.get(&format!("{prefix}{}", part.name)).await?;
    if stored.len() as u64 != part.stored_bytes {
        return Err(PipelineError::Size {
            name: part.name.clone(),
            want: part.stored_bytes,
            got: stored.len() as u64,
        });
    }
    let got = tokio::task::spawn_blocking({
        let stored = stored.clone();
        move || sha256_hex(&stored)
    })
    .await
    .unwrap_or_default();
    if got != part.sha256 {
        return Err(PipelineError::Checksum { name: part.name.clone(), want: part.sha256.clone(), got });
    }
    Ok(stored)
}

/// Downloads `parts` from under `prefix` and writes the stream they hold to `writer`,
/// in order.
pub async fn download<S: ObjectStore, W: AsyncWrite + Unpin + Send>(
    store: Arc<S>,
    prefix: &str,
    parts: &[Part],
    settings: &PipelineSettings,
    mut writer: W,
    progress: Arc<Progress>,
) -> Result<(), PipelineError> {
    let mut decoded = futures::stream::iter(parts.iter().cloned())
        .map(|part| {
            let (store, progress, key) = (store.clone(), progress.clone(), settings.key.clone());
            let prefix = prefix.to_string();
            async move {
                let started = std::time::Instant::now();
                let stored = fetch_checked(store.as_ref(), &prefix, &part).await?;
                let fetched = started.elapsed();
                progress.stored.fetch_add(stored.len() as u64, Ordering::Relaxed);
                let raw_len = part.raw_bytes as usize;
                let name = part.name.clone();
                let out = tokio::task::spawn_blocking(move || decode(&stored, raw_len, key.as_deref())).await;
                tracing::debug!(part = %part.name, fetch_ms = fetched.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "part downloaded");
                out
                    .map_err(|e| PipelineError::Part {
                        name: name.clone(),
                        error: PartError::Decompress(format!("the decompression task stopped: {e}")),
                    })?
                    .map_err(|error| PipelineError::Part { name, error })
            }
        })
        .buffered(settings.concurrency.max(1));
    while let Some(raw) = decoded.next().await {
        let raw = raw?;
        writer.write_all(&raw).await.map_err(|e| PipelineError::Write(e.to_string()))?;
        progress.raw.fetch_add(raw.len() as u64, Ordering::Relaxed);
        progress.parts.fetch_add(1, Ordering::Relaxed);
    }
    writer.flush().await.map_err(|e| PipelineError::Write(e.to_string()))?;
    writer.shutdown().await.map_err(|e| PipelineError::Write(e.to_string()))?;
    Ok(())
}

/// Checks every part's size and SHA-256 (and, with `open`, that it opens and
/// decompresses to its recorded size) without restoring anything. Returns the first
/// problem of each bad part.
pub async fn verify<S: ObjectStore>(
    store: Arc<S>,
    prefix: &str,
    parts: &[Part],
    settings: &PipelineSettings,
    open: bool,
    progress: Arc<Progress>,
) -> Vec<PipelineError> {
    futures::stream::iter(parts.iter().cloned())
        .map(|part| {
            let (store, progress, key) = (store.clone(), progress.clone(), settings.key.clone());
            let prefix = prefix.to_string();
            async move {
                let stored = fetch_checked(store.as_ref(), &prefix, &part).await?;
                progress.stored.fetch_add(stored.len() as u64, Ordering::Relaxed);
                progress.parts.fetch_add(1, Ordering::Relaxed);
                if open {
                    let raw_len = part.raw_bytes as usize;
                    let name = part.name.clone();
                    tokio::task::spawn_blocking(move || decode(&stored, raw_len, key.as_deref()).map(|_| ()))
                        .await
                        .map_err(|e| PipelineError::Part {
                            name: name.clone(),
                            error: PartError::Decompress(format!("the decompression task stopped: {e}")),
                        })?
                        .map_err(|error| PipelineError::Part { name, error })?;
                }
                progress.raw.fetch_add(part.raw_bytes, Ordering::Relaxed);
                Ok::<(), PipelineError>(())
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}
