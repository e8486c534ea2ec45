//! The node's long-running processes (mysqld, the orchestrator peer): systemd units on
//! a real node, detached processes with pid files in tests and the sandbox.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::facts::ServiceManager;

/// One service: a name and the command line that runs it in the foreground.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// `orchestrator-mysqld`, `orchestrator`.
    pub name: String,
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Seconds systemd waits for a stop before killing.
    pub stop_timeout_s: u64,
}

impl Service {
    /// The systemd unit.
    pub fn unit(&self) -> String {
        let mut exec = vec![self.program.display().to_string()];
        exec.extend(self.args.iter().cloned());
        format!(
            "# Written by `provisioner bootstrap`.\n\
             [Unit]\nDescription={}\nAfter=network-online.target\nWants=network-online.target\n\n\
             [Service]\nType=simple\nExecStart={}\nRestart=on-failure\nRestartSec=2\n\
             TimeoutStopSec={}\nLimitNOFILE=65536\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            self.description,
            exec.join(" "),
            self.stop_timeout_s
        )
    }
}

/// Starts, stops and checks services, one way or the other.
#[derive(Debug, Clone)]
pub struct Services {
    pub manager: ServiceManager,
    /// Units (systemd) or pid files and logs (processes) go here.
    pub units: PathBuf,
    pub state: PathBuf,
}

impl Services {
    fn pid_file(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.pid"))
    }

    /// Where a process's output goes (process manager only).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.log"))
    }

    fn pid(&self, name: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(name)).ok()?.trim().parse().ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid)).then_some(pid)
    }

    pub fn is_running(&self, name: &str) -> bool {
        match self.manager {
            ServiceManager::Process => self.pid(name).is_some(),
            ServiceManager::Systemd => Command::new("systemctl")
                .args(["is-active", "--quiet", name])
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// Installs and starts `service` (does nothing when it already runs). Returns
    /// whether it was started now.
    pub fn start(&self, service: &Service) -> anyhow::Result<bool> {
        if self.is_running(&service.name) {
            return Ok(false);
        }
        match self.manager {
            ServiceManager::Systemd => {
                std::fs::create_dir_all(&self.units)?;
                let path = self.units.join(format!("{}.service", service.name));
                std::fs::write(&path, service.unit())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                systemctl(&["daemon-reload"])?;
                systemctl(&["enable", "--now", &service.name])?;
            }
            ServiceManager::Process => {
                use std::os::unix::process::CommandExt;
                std::fs::create_dir_all(&self.state)?;
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_file(&service.name))
                    .with_context(|| format!("cannot open the log of {}", service.name))?;
                let child = Command::new(&service.program)
                    .args(&service.args)
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    // Its own session: it outlives this bootstrap, as a unit would.
                    .process_group(0)
                    .spawn()
                    .with_context(|| format!("cannot start {}", service.program.display()))?;
                std::fs::write(self.pid_file(&service.name), child.id().to_string())?;
            }
        }
        Ok(true)
    }

    /// Stops `name` and waits until it has exited (at most `patience`).
    pub fn stop(&self, name: &str, patience: Duration) -> anyhow::Result<()> {
        match self.manager {
            ServiceManager::Systemd => systemctl(&["stop", name]),
            ServiceManager::Process => {
                let Some(pid) = self.pid(name) else { return Ok(()) };
                // SAFETY: sends SIGTERM to the process this service started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + patience;
                while self.pid(name).is_some() {
                    if Instant::now() >= deadline {
                        bail!("{name} (pid {pid}) did not stop within {} s", patience.as_secs());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = std::fs::remove_file(self.pid_file(name));
                Ok(())
            }
        }
    }

    /// The commands (argv) that stop and start `service` from outside the bootstrap: a
    /// restore run by the peer swaps the server's data with it stopped. With systemd,
    /// `systemctl stop|start`; with the process manager, two scripts written under the
    /// state directory that use the same pid file this manager does.
    pub fn control_commands(&self, service: &Service) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let name = &service.name;
        match self.manager {
            ServiceManager::Systemd => Ok((
                vec!["systemctl".into(), "stop".into(), name.clone()],
                vec!["systemctl".into(), "start".into(), name.clone()],
            )),
            ServiceManager::Process => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(&self.state)?;
                let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
                let pid = quote(&self.pid_file(name).display().to_string());
                let log = quote(&self.log_file(name).display().to_string());
                let mut line = vec![quote(&service.program.display().to_string())];
                line.extend(service.args.iter().map(|a| quote(a)));
                let stop = format!(
                    "#!/bin/sh\n# Written by `provisioner bootstrap`: stops {name}.\n\
                     pid=$(cat {pid} 2>/dev/null) || exit 0\nkill \"$pid\" 2>/dev/null || exit 0\n\
                     while kill -0 \"$pid\" 2>/dev/null && ! grep -q '^[^)]*) Z' /proc/\"$pid\"/stat 2>/dev/null; do sleep 0.1; done\n\
                     rm -f {pid}\n"
                );
                let start = format!(
                    "#!/bin/sh\n# Written by `provisioner bootstrap`: starts {name} detached.\n\
                     setsid {} >> {log} 2>&1 < /dev/null &\necho $! > {pid}\n",
                    line.join(" ")
                );
                let mut paths = Vec::new();
                for (kind, text) in [("stop", stop), ("start", start)] {
                    let path = self.state.join(format!("{name}-{kind}.sh"));
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                    paths.push(vec![path.display().to_string()]);
                }
                let start = paths.pop().expect("two scripts");
                let stop = paths.pop().expect("two scripts");
                Ok((stop, start))
            }
        }
    }

    /// Waits until `name` has exited by itself (mysqld after a clone).
    pub fn wait_exit(&self, name: &str, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while self.is_running(name) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl").args(args).output().context("cannot run systemctl")?;
    if !out.status.success() {
        bail!("systemctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A process that has exited but was not reaped (a child of ours) counts as gone.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The pid files a bootstrap's process manager wrote under `state` (the test bed kills
/// them when it tears a host down).
pub fn pid_files(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .map(|d| {
            d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pid")).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_runs_the_command_in_the_foreground_and_restarts_on_failure() {
        let s = Service {
            name: "orchestrator".into(),
            description: "orchestrator peer".into(),
            program: "/usr/local/bin/orchestrator".into(),
            args: vec!["--config".into(), "/etc/orchestrator/orchestrator.toml".into()],
            stop_timeout_s: 60,
        };
        let unit = s.unit();
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/orchestrator --config /etc/orchestrator/orchestrator.toml\n"
        ));
        assert!(unit.contains("Restart=on-failure\n"));
        assert!(unit.contains("TimeoutStopSec=60\n"));
        assert!(unit.contains("WantedBy=multi-user.target\n"));
    }

    #[test]
    fn a_process_service_starts_once_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let services = Services {
            manager: ServiceManager::Process,
            units: dir.path().join("units"),
            state: dir.path().join("state"),
        };
        let sleep = Service {
            name: "sleeper".into(),
            description: "test".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            stop_timeout_s: 5,
        };
        assert!(services.start(&sleep).unwrap());
        assert!(services.is_running("sleeper"));
        assert!(!services.start(&sleep).unwrap(), "already running");
        assert_eq!(pid_files(&services.state).len(), 1);
        services.stop("sleeper", Duration::from_secs(5)).unwrap();
        assert!(!services.is_running("sleeper"));
        // The scripts a restore uses do the same from outside.
        let (stop, start) = services.control_commands(&sleep).unwrap();
        assert!(Command::new(&start[0]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !services.is_running("sleeper") {
            assert!(Instant::now() < deadline, "the start script started nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Command::new(&stop[0]).status().unwrap().success());
        assert!(!services.is_running("sleeper"));
        let systemd = Services { manager: ServiceManager::Systemd, ..services };
        assert_eq!(systemd.control_commands(&sleep).unwrap().0, ["systemctl", "stop", "sleeper"]);
    }
}
