//! The real implementations of the executor's seams: [`MysqlControl`] (probes through
//! discovery, commands through `mysql::admin`), Raft decisions, and [`ShellHooks`].

use std::sync::Arc;
use std::time::Duration;

use super::executor::{Control, Decisions, HookFacts, Hooks};
use crate::config::HooksConfig;
use crate::discovery::DiscoveryHandle;
use crate::mysql::admin::MysqlAdmin;
use crate::raft::RaftNode;
use crate::state::{Command, CommandResult};
use crate::topology::{InstanceKey, InstanceProbe};

/// MySQL side of a recovery on real servers.
pub struct MysqlControl {
    pub discovery: DiscoveryHandle,
    pub admin: Arc<MysqlAdmin>,
}

impl Control for MysqlControl {
    async fn probe(&self, key: &InstanceKey) -> Result<InstanceProbe, String> {
        let seen = self.discovery.observe(key).await.state;
        match (seen.reachable, seen.last_probe) {
            (true, Some(p)) => Ok(p),
            _ => Err(format!("{key} unreachable: {}", seen.last_error.unwrap_or_default())),
        }
    }

    async fn fence(&self, key: &InstanceKey) -> Result<(), String> {
        self.admin.fence(key).await.map_err(|e| e.to_string())
    }

    async fn stop_io_thread(&self, key: &InstanceKey, source_refuses: bool) -> Result<(), String> {
        self.admin.stop_io_thread(key, source_refuses).await.map_err(|e| e.to_string())
    }

    async fn enable_semi_sync(&self, key: &InstanceKey) -> Result<(), String> {
        self.admin.enable_semi_sync_master(key).await.map_err(|e| e.to_string())
    }

    async fn promote(&self, key: &InstanceKey, semi_sync: bool) -> Result<(), String> {
        self.admin.promote(key, semi_sync).await.map_err(|e| e.to_string())
    }

    async fn replicate_from(&self, key: &InstanceKey, source: &InstanceKey) -> Result<(), String> {
        self.admin.replicate_from(key, source).await.map_err(|e| e.to_string())
    }

    async fn verify_write(&self, key: &InstanceKey) -> Result<(), String> {
        self.admin.verify_write(key).await.map_err(|e| e.to_string())
    }
}

impl Decisions for RaftNode {
    async fn decide(&self, command: Command) -> Result<CommandResult, String> {
        self.write(command).await.map(|o| o.result).map_err(|e| e.to_string())
    }
}

/// Runs the configured hook commands with `sh -c`, the facts in `ORCH_*` variables.
pub struct ShellHooks {
    pub config: HooksConfig,
}

impl ShellHooks {
    async fn run_all(
        &self,
        commands: &[String],
        facts: &HookFacts,
        success: Option<bool>,
    ) -> Result<(), String> {
        for command in commands {
            run_hook(command, facts, success, Duration::from_millis(self.config.timeout_ms)).await?;
        }
        Ok(())
    }

    /// On failure detection (before any decision).
    pub async fn on_detection(&self, facts: &HookFacts) {
        if let Err(e) = self.run_all(&self.config.on_failure_detection, facts, None).await {
            tracing::warn!(error = %e, "failure-detection hook failed");
        }
    }
}

async fn run_hook(
    command: &str,
    facts: &HookFacts,
    success: Option<bool>,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("ORCH_CLUSTER", &facts.cluster)
        .env("ORCH_FAILED_MASTER", &facts.failed_master)
        .env("ORCH_REASON", &facts.reason)
        .env("ORCH_RECOVERY_ID", facts.recovery_id.to_string())
        .env("ORCH_EPOCH", facts.epoch.to_string())
        .env("ORCH_NEW_MASTER", &facts.new_master)
        .env("ORCH_SUMMARY", &facts.summary)
        .kill_on_drop(true);
    if let Some(s) = success {
        cmd.env("ORCH_SUCCESS", if s { "true" } else { "false" });
    }
    let child = cmd.output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!("hook `{command}` still running after {} ms, killed", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("hook `{command}` could not start: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "hook `{command}` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

impl Hooks for ShellHooks {
    async fn pre_failover(&self, facts: &HookFacts) -> Result<(), String> {
        self.run_all(&self.config.pre_failover, facts, None).await
    }

    async fn post_failover(&self, facts: &HookFacts, success: bool) {
        let commands =
            if success { &self.config.post_failover } else { &self.config.post_unsuccessful_failover };
        if let Err(e) = self.run_all(commands, facts, Some(success)).await {
            tracing::warn!(error = %e, "post-failover hook failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_get_the_facts_and_a_failing_pre_hook_vetoes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("facts");
        let hooks = ShellHooks {
            config: HooksConfig {
                pre_failover: vec![format!(
                    "echo \"$ORCH_CLUSTER $ORCH_FAILED_MASTER $ORCH_EPOCH\" > {}",
                    out.display()
                )],
                post_failover: vec![format!("echo \"$ORCH_SUCCESS $ORCH_NEW_MASTER\" >> {}", out.display())],
                timeout_ms: 5000,
                ..Default::default()
            },
        };
        let facts = HookFacts {
            cluster: "main".into(),
            failed_master: "a:1".into(),
            epoch: 7,
            new_master: "b:1".into(),
            ..Default::default()
        };
        hooks.pre_failover(&facts).await.unwrap();
        hooks.post_failover(&facts, true).await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "main a:1 7\ntrue b:1\n");

        let veto = ShellHooks {
            config: HooksConfig {
                pre_failover: vec!["echo no >&2; exit 3".into()],
                timeout_ms: 5000,
                ..Default::default()
            },
        };
        let e = veto.pre_failover(&facts).await.unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("no"), "{e}");
        let slow = ShellHooks {
            config: HooksConfig {
                pre_failover: vec!["sleep 5".into()],
                timeout_ms: 100,
                ..Default::default()
            },
        };
        assert!(slow.pre_failover(&facts).await.unwrap_err().contains("killed"));
    }
}
