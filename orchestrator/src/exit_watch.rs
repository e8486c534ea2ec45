//! The co-located master's process, watched from its own host. A `kill -9`ed (or
//! OOM-killed) mysqld keeps its listening and client sockets open until the kernel has
//! freed its memory: 60-100 ms for a 550 MB MySQL here, seconds for a large buffer
//! pool. Meanwhile connections are accepted and answered by nothing, so over the
//! network the death looks like a hang until the port finally refuses. On the host
//! the exit shows at once in `/proc`: the main thread turns zombie, or carries
//! `PF_EXITING`, or is gone. Such a process never runs user code again, so the peer
//! here records the master failed by [`FailureKind::Exited`] and tells the leader,
//! whose analysis takes that first-hand fact as the death of the master (see
//! `analysis`): no network view, hence no quorum of views, is involved.
//!
//! The process is found through the server itself (`@@pid_file`, read after the
//! server answered, so the file is current) and checked to be a mysqld or mariadbd.
//! [`TaskStat`] and [`ProcessState`] are the pure part; [`ExitWatch`] the task.
//!
//! [`FailureKind::Exited`]: crate::topology::FailureKind::Exited

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use orch_proto::raft::ProcessExitedRequest;

use crate::discovery::DiscoveryHandle;
use crate::mysql::{connect_with, ProbeError, ProbeSettings};
use crate::raft::RaftNode;
use crate::topology::InstanceKey;
use crate::unix_millis_now;

/// `task->flags` bit set when a task begins to exit (`include/linux/sched.h`).
const PF_EXITING: u64 = 0x4;
/// How often whether the local instance is a master is read from the Raft state.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How long to wait before looking for the process again after a failed attempt.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long the leader gets to take the report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// The fields of `/proc/<pid>/task/<tid>/stat` this watch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    /// The executable's name, as the kernel keeps it (at most 15 bytes).
    pub comm: String,
    /// `R`, `S`, `D`, `T`, `Z`, `X`...
    pub state: char,
    /// `task->flags`.
    pub flags: u64,
}

impl TaskStat {
    /// Parses one stat line. The name is in parentheses and may itself hold spaces and
    /// parentheses: it ends at the last `)`.
    pub fn parse(line: &str) -> Option<TaskStat> {
        let open = line.find('(')?;
        let close = line.rfind(')')?;
        let comm = line.get(open + 1..close)?.to_string();
        let mut rest = line.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
        let flags = rest.nth(5)?.parse().ok()?;
        Some(TaskStat { comm, state, flags })
    }
}

/// Whether a process named `comm`, run as `cmdline` (its NUL-separated arguments), is
/// a MySQL or MariaDB server: by its name, or by a program among its first arguments
/// (a server run through a loader, as from a root of its own, is named after the loader).
pub fn is_mysql_server(comm: &str, cmdline: &[u8]) -> bool {
    let server = |name: &str| matches!(name, "mysqld" | "mariadbd" | "mysqld-debug" | "mariadbd-debug");
    server(comm)
        || cmdline
            .split(|b| *b == 0)
            .take_while(|arg| !arg.starts_with(b"--defaults"))
            .filter_map(|arg| std::str::from_utf8(arg).ok())
            .any(|arg| !arg.starts_with('-') && server(arg.rsplit('/').next().unwrap_or(arg)))
}

/// What the main thread's stat says of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running, sleeping, or stopped (`SIGSTOP` is a hang, left to the hang window:
    /// a stopped process may go on).
    Alive,
    /// Exiting: it will never run user code again.
    Exiting,
    /// No such process any more.
    Gone,
}

impl ProcessState {
    /// From the main thread's stat (`None`: it does not exist).
    pub fn of(stat: Option<&TaskStat>) -> ProcessState {
        match stat {
            None => ProcessState::Gone,
            Some(s) if matches!(s.state, 'Z' | 'X' | 'x') || s.flags & PF_EXITING != 0 => {
                ProcessState::Exiting
            }
            Some(_) => ProcessState::Alive,
        }
    }

    /// How a report words it.
    pub fn seen(self) -> &'static str {
        match self {
            ProcessState::Alive => "is alive",
            ProcessState::Exiting => "is exiting",
            ProcessState::Gone => "is gone",
        }
    }
}

/// The stat of `pid`'s main thread (its own line, cheaper than the whole process's,
/// which sums every thread); `None` when it does not exist.
fn main_thread_stat(pid: u32) -> Option<TaskStat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).ok()?;
    TaskStat::parse(&line)
}

/// Why the process could not be found, in one line.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("cannot ask {instance} for its pid file: {source}")]
    Ask { instance: InstanceKey, source: ProbeError },
    #[error("cannot read the pid file {path} of {instance}: {source}")]
    Read { instance: InstanceKey, path: PathBuf, source: std::io::Error },
    #[error("the pid file {path} of {instance} holds no pid")]
    NoPid { instance: InstanceKey, path: PathBuf },
    #[error(
        "pid {pid} (from {path}) is not a running mysqld or mariadbd: {instance} may not run on this host"
    )]
    NotTheServer { instance: InstanceKey, path: PathBuf, pid: u32 },
}

/// The pid file's path: `@@pid_file`, relative to `@@datadir` when not absolute.
fn pid_file_path(pid_file: &str, datadir: &str) -> PathBuf {
    let p = Path::new(pid_file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(datadir).join(p)
    }
}

/// Watches the local instance's process while the Raft state names it a master.
pub struct ExitWatch {
    raft: Arc<RaftNode>,
    discovery: DiscoveryHandle,
    settings: ProbeSettings,
    local: InstanceKey,
    poll: Duration,
}

impl ExitWatch {
    pub fn new(
        raft: Arc<RaftNode>,
        discovery: DiscoveryHandle,
        settings: ProbeSettings,
        local: InstanceKey,
        poll: Duration,
    ) -> Self {
        Self { raft, discovery, settings, local, poll }
    }

    fn local_is_master(&self) -> bool {
        self.raft.with_state(|s| s.is_master(&self.local))
    }

    /// Runs until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        // The last reason the process could not be found, said once until it changes.
        let mut last_problem: Option<String> = None;
        loop {
            if !self.local_is_master() {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(FOLLOW_EVERY) => continue,
                }
            }
            let pid = match self.find_process().await {
                Ok(pid) => {
                    last_problem = None;
                    pid
                }
                Err(e) => {
                    let line = e.to_string();
                    // A server that is down has no process to watch: not worth a warning.
                    let quiet = matches!(&e, FindError::Ask { .. });
                    if last_problem.as_deref() != Some(line.as_str()) && !quiet {
                        tracing::warn!(error = %line, "the local master's process is not watched");
                    }
                    last_problem = Some(line);
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(RETRY_EVERY) => continue,
                    }
                }
            };
            tracing::info!(instance = %self.local, pid, "watching the local master's process");
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut followed = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick() => {}
                }
                let state = ProcessState::of(main_thread_stat(pid).as_ref());
                if state != ProcessState::Alive {
                    self.report(pid, state).await;
                    // Looked for again once the server answers (a restart has a new pid).
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(RETRY_EVERY) => {}
                    }
                    break;
                }
                if followed.elapsed() >= FOLLOW_EVERY {
                    followed = std::time::Instant::now();
                    if !self.local_is_master() {
                        tracing::info!(instance = %self.local, pid, "no longer a master: its process is not watched");
                        break;
                    }
                }
            }
        }
    }

    /// The pid of the local server, asked of the server itself (so the pid file read is
    /// the one it wrote), and checked to be a live mysqld or mariadbd.
    async fn find_process(&self) -> Result<u32, FindError> {
        let ask = |source| FindError::Ask { instance: self.local.clone(), source };
        let mut conn = connect_with(
            &self.settings.credentials,
            &self.local,
            &self.settings.user,
            |p| &p.orchestrator,
            self.settings.connect_timeout,
        )
        .await
        .map_err(ask)?;
        let row: Option<(String, String)> =
            conn.query_first("SELECT @@pid_file, @@datadir").await.map_err(|e| {
                ask(ProbeError::Query { sql: "SELECT @@pid_file".into(), message: e.to_string() })
            })?;
        let _ = conn.disconnect().await;
        let (pid_file, datadir) = row.unwrap_or_default();
        let path = pid_file_path(&pid_file, &datadir);
        let text = std::fs::read_to_string(&path).map_err(|source| FindError::Read {
            instance: self.local.clone(),
            path: path.clone(),
            source,
        })?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| FindError::NoPid { instance: self.local.clone(), path: path.clone() })?;
        match main_thread_stat(pid) {
            Some(stat)
                if ProcessState::of(Some(&stat)) == ProcessState::Alive
                    && is_mysql_server(
                        &stat.comm,
                        &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
                    ) =>
            {
                Ok(pid)
            }
            _ => Err(FindError::NotTheServer { instance: self.local.clone(), path, pid }),
        }
    }

    /// Records the local master failed by its process's exit, and tells the leader.
    async fn report(&self, pid: u32, state: ProcessState) {
        let seen = state.seen();
        tracing::warn!(instance = %self.local, pid, seen, "the local master's mysqld process exited");
        self.discovery.store().record_process_exit(&self.local, pid, seen, unix_millis_now());
        if self.raft.is_leader() {
            return;
        }
        let Some(mut client) = self.raft.leader().and_then(|(id, _)| self.raft.peer_client(id)) else {
            tracing::warn!(instance = %self.local, "no leader to tell that the master's process exited");
            return;
        };
        let mut request = tonic::Request::new(ProcessExitedRequest {
            instance: self.local.to_string(),
            pid,
            seen: seen.to_string(),
        });
        request.set_timeout(REPORT_TIMEOUT);
        if let Err(e) = client.process_exited(request).await {
            tracing::warn!(instance = %self.local, error = %e.message(), "cannot tell the leader that the master's process exited");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(comm: &str, state: char, flags: u64) -> String {
        format!("4242 ({comm}) {state} 1 4242 4242 0 -1 {flags} 513 0 0 0 12 3 0 0 20 0 37 0 1234 0")
    }

    #[test]
    fn the_name_ends_at_the_last_parenthesis() {
        let s = TaskStat::parse(&stat("my (odd) name", 'S', 4194560)).unwrap();
        assert_eq!(s, TaskStat { comm: "my (odd) name".into(), state: 'S', flags: 4194560 });
        assert!(TaskStat::parse("4242 (mysqld S 1").is_none());
        assert!(TaskStat::parse("").is_none());
    }

    #[test]
    fn states_of_a_process() {
        let of = |state, flags| ProcessState::of(TaskStat::parse(&stat("mysqld", state, flags)).as_ref());
        // Sleeping, running, in a disk wait, stopped (SIGSTOP: a hang, not a death).
        for state in ['S', 'R', 'D', 'T', 't'] {
            assert_eq!(of(state, 0x400100), ProcessState::Alive, "{state}");
        }
        // Killed: PF_EXITING set while its threads tear down, zombie, dead.
        assert_eq!(of('R', 0x400104), ProcessState::Exiting);
        assert_eq!(of('D', 0x404144), ProcessState::Exiting);
        assert_eq!(of('Z', 0x400104), ProcessState::Exiting);
        assert_eq!(of('X', 0), ProcessState::Exiting);
        assert_eq!(ProcessState::of(None), ProcessState::Gone);
    }

    #[test]
    fn only_mysql_servers_are_watched() {
        for (comm, server) in
            [("mysqld", true), ("mariadbd", true), ("mysqld-debug", true), ("mysql", false), ("sleep", false)]
        {
            assert_eq!(is_mysql_server(comm, b""), server, "{comm}");
        }
        // Run through the loader of a root of its own.
        let loaded = b"/r/lib64/ld-linux-x86-64.so.2\0--library-path\0/r/lib\0/r/usr/sbin/mysqld\0--defaults-file=/etc/my.cnf\0";
        assert!(is_mysql_server("ld-linux-x86-64", loaded));
        // A client, or a server named only in an option, is not one.
        assert!(!is_mysql_server("mysql", b"mysql\0-h\0db1\0"));
        assert!(!is_mysql_server("bash", b"bash\0--defaults-file=/x/mysqld.cnf\0"));
        assert!(!is_mysql_server("tail", b"tail\0-f\0/var/log/mysqld.log\0"));
    }

    #[test]
    fn a_relative_pid_file_is_in_the_data_directory() {
        assert_eq!(
            pid_file_path("/run/mysqld/mysqld.pid", "/var/lib/mysql/"),
            Path::new("/run/mysqld/mysqld.pid")
        );
        assert_eq!(pid_file_path("db1.pid", "/var/lib/mysql/"), Path::new("/var/lib/mysql/db1.pid"));
    }

    /// A real process killed with SIGKILL shows as exiting or gone, never alive.
    #[test]
    fn a_killed_process_is_seen_exiting() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let alive = main_thread_stat(pid).unwrap();
        assert_eq!(alive.comm, "sleep");
        assert_eq!(ProcessState::of(Some(&alive)), ProcessState::Alive);
        child.kill().unwrap();
        // Not reaped yet: a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ProcessState::of(main_thread_stat(pid).as_ref()) == ProcessState::Alive {
            assert!(std::time::Instant::now() < deadline, "still alive 5 s after SIGKILL");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ProcessState::of(main_thread_stat(pid).as_ref()), ProcessState::Exiting);
        child.wait().unwrap();
        assert_eq!(ProcessState::of(main_thread_stat(pid).as_ref()), ProcessState::Gone);
    }
}
