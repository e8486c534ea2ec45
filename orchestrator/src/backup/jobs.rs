//! Long backup work running on this peer (a backup, a restore, a verification), as
//! jobs anybody can watch: phase, bytes done out of an estimate, stored bytes, the
//! outcome. The last few ended jobs are kept for late watchers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::pipeline::Progress;

/// Ended jobs kept for watchers that come late.
const KEPT_ENDED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
}

/// A job as watchers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    /// `backup full`, `backup incremental`, `restore`, `verify`.
    pub kind: String,
    pub cluster: String,
    /// The instance copied or restored onto, `host:port`.
    pub instance: String,
    pub runner: u64,
    pub runner_http: String,
    pub phase: String,
    /// Stream bytes done, and the estimate of all (0: unknown).
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub stored_bytes: u64,
    pub started_unix_ms: i64,
    /// 0 while running.
    pub ended_unix_ms: i64,
    pub status: JobStatus,
    /// The outcome in one line (or why it failed).
    pub result: String,
    /// The backup made, restored or verified.
    pub backup_id: String,
    /// Every phase so far and when it began (Unix ms).
    #[serde(default)]
    pub phases: Vec<(String, i64)>,
}

/// One running (or ended) job.
#[derive(Debug)]
pub struct Job {
    view: Mutex<JobView>,
    /// The pipeline's counters of the current phase.
    progress: Mutex<Arc<Progress>>,
    /// Bytes finished in earlier phases (a restore moves several streams).
    done_before: AtomicU64,
    total: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Job {
    pub fn view(&self) -> JobView {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let p = self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.bytes_done = self.done_before.load(Ordering::Relaxed) + p.raw();
        v.bytes_total = self.total.load(Ordering::Relaxed);
        v.stored_bytes = v.stored_bytes.max(p.stored());
        v
    }

    fn touch(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// A new phase (`uploading`, `preparing`, ...).
    pub fn phase(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(job = %self.id(), phase = %text, "backup job");
        {
            let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
            v.phases.push((text.clone(), crate::unix_millis_now()));
            v.phase = text;
        }
        self.touch();
    }

    pub fn id(&self) -> String {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).id.clone()
    }

    /// The counters the next stream updates; what the previous one did stays counted.
    pub fn stream(&self) -> Arc<Progress> {
        let fresh = Arc::new(Progress::default());
        let mut current = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.done_before.fetch_add(current.raw(), Ordering::Relaxed);
        let stored = current.stored();
        self.view.lock().unwrap_or_else(|e| e.into_inner()).stored_bytes += stored;
        *current = fresh.clone();
        fresh
    }

    pub fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
        self.touch();
    }

    pub fn set_backup_id(&self, id: &str) {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).backup_id = id.to_string();
        self.touch();
    }

    pub fn finish(&self, outcome: Result<String, String>) {
        {
            let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
            v.ended_unix_ms = crate::unix_millis_now();
            match outcome {
                Ok(text) => {
                    v.status = JobStatus::Succeeded;
                    v.phase = "done".into();
                    v.result = text;
                }
                Err(text) => {
                    v.status = JobStatus::Failed;
                    v.result = text;
                }
            }
        }
        self.touch();
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Every job of this peer.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    sequence: AtomicU64,
}

impl Jobs {
    /// Registers a new running job.
    pub fn start(
        &self,
        kind: &str,
        cluster: &str,
        instance: &str,
        runner: u64,
        runner_http: &str,
    ) -> Arc<Job> {
        let now = crate::unix_millis_now();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{runner}-{now}-{n}");
        let job = Arc::new(Job {
            view: Mutex::new(JobView {
                id: id.clone(),
                kind: kind.to_string(),
                cluster: cluster.to_string(),
                instance: instance.to_string(),
                runner,
                runner_http: runner_http.to_string(),
                phase: "starting".into(),
                bytes_done: 0,
                bytes_total: 0,
                stored_bytes: 0,
                started_unix_ms: now,
                ended_unix_ms: 0,
                status: JobStatus::Running,
                result: String::new(),
                backup_id: String::new(),
                phases: Vec::new(),
            }),
            progress: Mutex::new(Arc::new(Progress::default())),
            done_before: AtomicU64::new(0),
            total: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(0).0,
        });
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.insert(id, job.clone());
        let mut ended: Vec<(i64, String)> = jobs
            .iter()
            .map(|(id, j)| (j.view().ended_unix_ms, id.clone()))
            .filter(|(ended, _)| *ended > 0)
            .collect();
        ended.sort();
        while ended.len() > KEPT_ENDED {
            let (_, id) = ended.remove(0);
            jobs.remove(&id);
        }
        job
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn list(&self) -> Vec<JobView> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).values().map(|j| j.view()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_counts_bytes_across_streams_and_ends_once() {
        let jobs = Jobs::default();
        let job = jobs.start("restore", "main", "10.0.0.9:3306", 2, "10.0.0.2:3000");
        job.set_total(300);
        let first = job.stream();
        first.raw.fetch_add(100, Ordering::Relaxed);
        first.stored.fetch_add(10, Ordering::Relaxed);
        let second = job.stream();
        second.raw.fetch_add(50, Ordering::Relaxed);
        let v = job.view();
        assert_eq!((v.bytes_done, v.bytes_total, v.stored_bytes), (150, 300, 10));
        job.finish(Ok("restored".into()));
        let v = jobs.get(&job.id()).unwrap().view();
        assert_eq!(
            (v.status, v.result.as_str(), v.phase.as_str()),
            (JobStatus::Succeeded, "restored", "done")
        );
        assert!(v.ended_unix_ms > 0);
        for _ in 0..30 {
            jobs.start("verify", "main", "", 2, "").finish(Err("x".into()));
        }
        assert!(jobs.list().len() <= KEPT_ENDED + 1);
    }
}
