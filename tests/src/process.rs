//! Child processes of the test bed: killed when dropped, when the test thread that
//! started them dies (`PR_SET_PDEATHSIG`), or by the next run that takes the same
//! address block (recorded pids).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// How a child relates to the process that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Dies with the test: killed on drop and when the spawning thread exits.
    Test,
    /// Outlives the starter (the sandbox): its own process group, never killed on drop.
    Detached,
}

/// A running child process.
pub struct ManagedChild {
    name: String,
    child: Option<Child>,
    lifetime: Lifetime,
}

const PIDS_FILE: &str = "pids";

impl ManagedChild {
    /// Spawns `command` with stdout and stderr appended to `log`, recording its pid in
    /// `state_dir`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        state_dir: &Path,
        lifetime: Lifetime,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<ManagedChild> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        if let Some(dir) = cgroup {
            let procs = std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
                .context("cgroup path")?;
            // SAFETY: only open/write/close (async-signal-safe) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
        }
        match lifetime {
            Lifetime::Test => {
                // SAFETY: prctl is async-signal-safe; runs in the child before exec.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
            }
            Lifetime::Detached => {
                command.process_group(0);
            }
        }
        let child =
            command.spawn().with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        record(state_dir, child.id());
        Ok(ManagedChild { name: name.to_string(), child: Some(child), lifetime })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Leaves the process running after this handle is dropped.
    pub fn detach(mut self) -> u32 {
        let pid = self.pid().unwrap_or(0);
        self.child = None;
        pid
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::Test {
            self.kill();
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    // The state is the first field after the `(comm)` one.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|s| !s.starts_with('Z'))
    })
}

/// Records `pid` with the address block in `state_dir` ([`kill_recorded`] kills it later if it is still there).
pub fn record(state_dir: &Path, pid: u32) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(state_dir.join(PIDS_FILE)) {
        let _ = writeln!(f, "{pid}");
    }
}

/// Kills processes an earlier holder of this block left behind (only our own kinds:
/// `mariadbd`, `mysqld`, `orchestrator`, `moto_server`), then forgets them.
pub fn kill_recorded(state_dir: &Path) {
    let file: PathBuf = state_dir.join(PIDS_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return;
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if ["mariadbd", "mysqld", "orchestrator", "moto_server"].iter().any(|kind| cmdline.contains(kind)) {
            // SAFETY: plain kill(2); the pid was checked to be one of our kinds.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(file);
}
