//! Turning a backup chain in the bucket into a data directory on this host: each
//! backup downloaded in parallel parts (checked, opened, decompressed) into
//! `mbstream`/`xbstream -x` or the tar reader, then prepared in order (incrementals
//! applied on the full one). Used by a restore and by a node bootstrap that seeds a
//! new replica from the latest backup. Also reading a bucket's manifests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::manifest::{BackupKind, Layout, Manifest, Method, MANIFEST_NAME};
use super::pipeline::{self, PipelineSettings, Progress};
use super::service::BackupError;
use super::store::{ObjectStore, S3Store, StoreError};
use super::tools::{self, PrepareTool};

/// The programs and pipeline settings a chain needs.
#[derive(Debug, Clone)]
pub struct CopyTools {
    pub mariadb_backup: PathBuf,
    pub mbstream: PathBuf,
    pub xtrabackup: PathBuf,
    pub xbstream: PathBuf,
    pub settings: PipelineSettings,
}

/// Every complete backup (its manifest) of the cluster, and the backups with parts
/// but no manifest.
pub async fn read_manifests<S: ObjectStore>(
    store: &Arc<S>,
    layout: &Layout,
) -> Result<(Vec<Manifest>, Vec<(BackupKind, String)>), BackupError> {
    let mut manifest_keys = Vec::new();
    let mut seen: std::collections::BTreeMap<(BackupKind, String), bool> = Default::default();
    for kind in [BackupKind::Full, BackupKind::Incremental] {
        for o in store.list(&layout.kind_prefix(kind)).await? {
            if let Some((k, id, name)) = layout.parse_backup_key(&o.key) {
                let has = seen.entry((k, id.to_string())).or_insert(false);
                if name == MANIFEST_NAME {
                    *has = true;
                    manifest_keys.push(o.key.clone());
                }
            }
        }
    }
    let incomplete = seen.iter().filter(|(_, has)| !**has).map(|((k, id), _)| (*k, id.clone())).collect();
    let manifests = futures::stream::iter(manifest_keys)
        .map(|key| {
            let store = store.clone();
            let cluster_id = layout.cluster_id.clone();
            async move {
                // Retention may delete a backup between the listing and this read: a
                // manifest gone by now is a backup gone, not an error.
                let bytes = match store.get(&key).await {
                    Ok(bytes) => bytes,
                    Err(StoreError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(BackupError::from(e)),
                };
                Manifest::from_json(&bytes, &cluster_id)
                    .map(Some)
                    .map_err(|e| BackupError::Failed(format!("s3://{}/{key}: {e}", store.bucket())))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok((manifests.into_iter().flatten().collect(), incomplete))
}

/// Downloads one backup into `dir`: through `mbstream`/`xbstream -x` for a physical
/// backup, the tar reader for a clone.
pub async fn download_into(
    store: Arc<S3Store>,
    layout: &Layout,
    m: &Manifest,
    dir: &Path,
    tools: &CopyTools,
    progress: Arc<Progress>,
) -> Result<(), BackupError> {
    let prefix = layout.backup_prefix(m.kind, &m.id);
    let settings = &tools.settings;
    match m.method {
        Method::Clone => {
            let (reader, writer) = tokio::io::duplex(1 << 20);
            let target = dir.to_path_buf();
            let untar = tokio::task::spawn_blocking(move || {
                // Large reads from the bridge: each one is a wake-up of the runtime.
                let bridge = tokio_util::io::SyncIoBridge::new(reader);
                let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, bridge));
                archive.set_preserve_permissions(true);
                archive.unpack(&target)
            });
            let downloaded = pipeline::download(store, &prefix, &m.parts, settings, writer, progress).await;
            let unpacked = untar.await.map_err(|e| BackupError::Failed(e.to_string()))?;
            downloaded?;
            unpacked.map_err(|e| BackupError::Failed(format!("unpacking backup {}: {e}", m.id)))
        }
        Method::MariadbBackup | Method::Xtrabackup => {
            let program = if m.method == Method::Xtrabackup { &tools.xbstream } else { &tools.mbstream };
            let log_path = dir.with_extension("extract.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| BackupError::Failed(format!("{}: {e}", log_path.display())))?;
            let mut child = tokio::process::Command::new(program)
                .args(tools::extract_arguments(dir))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BackupError::Failed(format!("cannot start {}: {e}", program.display())))?;
            let stdin = child.stdin.take().expect("stdin is piped");
            tools::widen_pipe(std::os::fd::AsRawFd::as_raw_fd(&stdin));
            let downloaded = pipeline::download(store, &prefix, &m.parts, settings, stdin, progress).await;
            if let Err(e) = downloaded {
                // A write that failed is most likely the extractor having stopped:
                // its own reason is the one to report.
                if matches!(e, pipeline::PipelineError::Write(_)) {
                    if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                        if !status.success() {
                            return Err(BackupError::Failed(format!(
                                "{} failed ({status}): {}",
                                program.display(),
                                crate::donor::last_error_line(&log_path)
                            )));
                        }
                    }
                }
                let _ = child.kill().await;
                return Err(e.into());
            }
            let status = child.wait().await.map_err(|e| BackupError::Failed(e.to_string()))?;
            if !status.success() {
                return Err(BackupError::Failed(format!(
                    "{} failed ({status}): {}",
                    program.display(),
                    crate::donor::last_error_line(&log_path)
                )));
            }
            Ok(())
        }
    }
}

/// Runs a prepare step, its output into `log`.
async fn run_logged(program: &Path, args: &[String], log: &Path) -> Result<(), BackupError> {
    let file =
        std::fs::File::create(log).map_err(|e| BackupError::Failed(format!("{}: {e}", log.display())))?;
    let err = file.try_clone().map_err(|e| BackupError::Failed(e.to_string()))?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .await
        .map_err(|e| BackupError::Failed(format!("cannot start {}: {e}", program.display())))?;
    if !status.success() {
        return Err(BackupError::Failed(format!(
            "{} {} failed ({status}): {}",
            program.display(),
            args.join(" "),
            crate::donor::last_error_line(log)
        )));
    }
    Ok(())
}

/// Who hears how a materialization goes.
pub struct Report<'a> {
    /// Each step, in words.
    pub phase: &'a (dyn Fn(String) + Send + Sync),
    /// The counters of the next download.
    pub stream: &'a (dyn Fn() -> Arc<Progress> + Send + Sync),
}

/// Makes `chain` (full first) a data directory in `datadir` (empty or absent):
/// the full backup is extracted there, each incremental into `stage`, then prepared
/// in order.
pub async fn materialize(
    store: Arc<S3Store>,
    layout: &Layout,
    chain: &[Manifest],
    datadir: &Path,
    stage: &Path,
    tools: &CopyTools,
    report: Report<'_>,
) -> Result<(), BackupError> {
    let on_phase = report.phase;
    let io = |what: String, e: std::io::Error| BackupError::Failed(format!("{what}: {e}"));
    let mut dirs = Vec::new();
    for (i, m) in chain.iter().enumerate() {
        let dir = if i == 0 { datadir.to_path_buf() } else { stage.join(format!("incremental-{i}")) };
        std::fs::create_dir_all(&dir).map_err(|e| io(format!("making {}", dir.display()), e))?;
        on_phase(format!(
            "downloading {} backup {} ({}, {} parts)",
            m.kind,
            m.id,
            super::service::human_bytes(m.stored_bytes),
            m.parts.len()
        ));
        download_into(store.clone(), layout, m, &dir, tools, (report.stream)()).await?;
        dirs.push(dir);
    }
    let tip = chain.last().expect("a chain holds its full");
    if tip.method != Method::Clone {
        let (program, tool) = match tip.method {
            Method::Xtrabackup => (&tools.xtrabackup, PrepareTool::Xtrabackup),
            _ => (&tools.mariadb_backup, PrepareTool::MariadbBackup),
        };
        std::fs::create_dir_all(stage).map_err(|e| io(format!("making {}", stage.display()), e))?;
        for (i, args) in tools::prepare_runs(tool, &dirs[0], &dirs[1..]).into_iter().enumerate() {
            on_phase(if i == 0 {
                "preparing the full backup".to_string()
            } else {
                format!("applying incremental {i} of {}", dirs.len() - 1)
            });
            run_logged(program, &args, &stage.join(format!("prepare-{i}.log"))).await?;
        }
        for d in &dirs[1..] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    Ok(())
}
