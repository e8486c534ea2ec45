//! The donor side of seeding a new MariaDB node (DESIGN.md section 12): this peer runs
//! `mariadb-backup --backup --stream=xbstream` against its co-located server and hands
//! the bytes to the asking node as they come, over the Raft port's mutual TLS. Nothing
//! is staged on disk: the stream goes from the tool's standard output into the gRPC
//! stream through a small bounded channel (memory stays at a few chunks). One backup at
//! a time; the password goes to the tool in a 0600 option file, never in its arguments.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use orch_proto::raft::BackupChunk;
use tokio::io::AsyncReadExt;
use tonic::Status;

use crate::backup::tools::{self, write_private};
use crate::mysql::credentials::Credentials;
use crate::topology::InstanceKey;

/// Bytes per streamed message.
const CHUNK: usize = 1 << 20;
/// Messages buffered between the tool and the network.
const BUFFERED_CHUNKS: usize = 4;

/// Why no backup can be served now.
#[derive(Debug, thiserror::Error)]
pub enum DonorError {
    #[error("a backup is already being streamed from this peer; try again when it ends")]
    Busy,
    #[error("no `backup` password in the credentials secret: this peer cannot serve backups")]
    NoPassword,
    #[error("cannot prepare the backup's work directory {path}: {message}")]
    WorkDir { path: String, message: String },
    #[error("cannot start {program}: {message}")]
    Spawn { program: String, message: String },
}

/// What the donor needs to run the tool.
pub struct Donor {
    pub program: PathBuf,
    pub user: String,
    pub credentials: Arc<Credentials>,
    /// The co-located server.
    pub instance: InstanceKey,
    /// The server's option file (`datadir`, InnoDB settings), included by the tool's.
    pub server_options: PathBuf,
    /// Work directory of the running backup (removed when it ends).
    pub work_dir: PathBuf,
    busy: Arc<tokio::sync::Semaphore>,
}

pub type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<BackupChunk, Status>> + Send + 'static>>;

/// The tool's option file: the server's options, then the account.
pub fn option_file(server_options: &Path, instance: &InstanceKey, user: &str, password: &str) -> String {
    tools::option_file("mariadb-backup", Some(server_options), Some(instance), None, user, password)
}

/// The tool's arguments (the option file must come first).
pub fn arguments(options_file: &Path, target_dir: &Path) -> Vec<String> {
    vec![
        format!("--defaults-file={}", options_file.display()),
        "--backup".into(),
        "--stream=xbstream".into(),
        format!("--target-dir={}", target_dir.display()),
    ]
}

impl Donor {
    pub fn new(
        program: PathBuf,
        user: String,
        credentials: Arc<Credentials>,
        instance: InstanceKey,
        server_options: PathBuf,
        work_dir: PathBuf,
    ) -> Donor {
        Donor {
            program,
            user,
            credentials,
            instance,
            server_options,
            work_dir,
            busy: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Starts a backup and returns its byte stream; `to` names the receiver in the log.
    pub fn stream(&self, to: &str) -> Result<ChunkStream, DonorError> {
        let permit = self.busy.clone().try_acquire_owned().map_err(|_| DonorError::Busy)?;
        let password = self.credentials.current().backup.clone();
        if password.is_empty() {
            return Err(DonorError::NoPassword);
        }
        let work_error = |e: std::io::Error| DonorError::WorkDir {
            path: self.work_dir.display().to_string(),
            message: e.to_string(),
        };
        let _ = std::fs::remove_dir_all(&self.work_dir);
        std::fs::create_dir_all(&self.work_dir).map_err(work_error)?;
        let options = self.work_dir.join("backup.cnf");
        write_private(&options, &option_file(&self.server_options, &self.instance, &self.user, &password))
            .map_err(work_error)?;
        let target = self.work_dir.join("target");
        std::fs::create_dir_all(&target).map_err(work_error)?;
        let log = std::fs::File::create(self.work_dir.join("backup.log")).map_err(work_error)?;
        let mut child = tokio::process::Command::new(&self.program)
            .args(arguments(&options, &target))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DonorError::Spawn {
                program: self.program.display().to_string(),
                message: e.to_string(),
            })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BackupChunk, Status>>(BUFFERED_CHUNKS);
        let (to, work_dir) = (to.to_string(), self.work_dir.clone());
        tracing::info!(to = %to, instance = %self.instance, "streaming a backup to a bootstrapping node");
        tokio::spawn(async move {
            let _permit = permit;
            let started = std::time::Instant::now();
            let mut sent: u64 = 0;
            let mut receiver_gone = false;
            loop {
                let mut buf = vec![0u8; CHUNK];
                match stdout.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        sent += n as u64;
                        if tx.send(Ok(BackupChunk { data: buf })).await.is_err() {
                            receiver_gone = true;
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("reading the backup: {e}")))).await;
                        break;
                    }
                }
            }
            if receiver_gone {
                let _ = child.kill().await;
                tracing::warn!(to = %to, bytes = sent, "the receiver went away; backup stopped");
            } else {
                match child.wait().await {
                    Ok(status) if status.success() => tracing::info!(
                        to = %to,
                        bytes = sent,
                        seconds = started.elapsed().as_secs_f64(),
                        "backup streamed"
                    ),
                    Ok(status) => {
                        let reason = last_error_line(&work_dir.join("backup.log"));
                        tracing::warn!(to = %to, %status, reason = %reason, "mariadb-backup failed");
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "mariadb-backup on the donor failed: {reason}"
                            ))))
                            .await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("mariadb-backup: {e}")))).await;
                    }
                }
            }
            let _ = std::fs::remove_file(work_dir.join("backup.cnf"));
            let _ = std::fs::remove_dir_all(work_dir.join("target"));
        });
        Ok(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }
}

/// The last line of the tool's log that says what went wrong.
pub fn last_error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| l.contains("rror") || l.contains("FATAL") || l.contains("failed"))
        .or_else(|| text.lines().next_back())
        .unwrap_or("no output")
        .trim()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_file_includes_the_servers_and_the_arguments_hold_no_password() {
        let key: InstanceKey = "10.0.1.5:3306".parse().unwrap();
        let text = option_file(Path::new("/etc/mysql/node.cnf"), &key, "backup", "s3cret");
        assert!(text.starts_with("!include /etc/mysql/node.cnf\n"));
        assert!(text.contains(
            "[mariadb-backup]\nuser = 'backup'\npassword = 's3cret'\nhost = 10.0.1.5\nport = 3306\n"
        ));
        let args = arguments(Path::new("/w/backup.cnf"), Path::new("/w/target"));
        assert_eq!(args[0], "--defaults-file=/w/backup.cnf");
        assert!(args.contains(&"--stream=xbstream".to_string()));
        assert!(!args.join(" ").contains("s3cret"));
    }
}
