//! Runs `orchctl` as an operator would, and reads what it printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// What one `orchctl` run gave back.
#[derive(Debug)]
pub struct CtlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CtlRun {
    /// The JSON it printed (for `-o json`), or a panic naming the run.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `orchctl` against some endpoints with a token file.
#[derive(Debug, Clone)]
pub struct Ctl {
    pub bin: PathBuf,
    pub endpoints: Vec<String>,
    pub token_file: Option<PathBuf>,
    /// More arguments before the command (e.g. `--ca-cert FILE`).
    pub global: Vec<String>,
}

impl Ctl {
    /// `orchctl` with `token` written to a file in `dir` (mode 0600).
    pub fn new(dir: &Path, endpoints: Vec<String>, token: Option<&str>) -> anyhow::Result<Ctl> {
        let token_file = match token {
            Some(t) => {
                let path = dir.join(format!("token-{}", &t[..t.len().min(14)]));
                std::fs::write(&path, format!("{t}\n"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                Some(path)
            }
            None => None,
        };
        Ok(Ctl { bin: crate::peer::binary("orchctl")?, endpoints, token_file, global: Vec::new() })
    }

    /// The same, with another token file.
    pub fn with_token(&self, dir: &Path, token: &str) -> anyhow::Result<Ctl> {
        let mut other = Ctl::new(dir, self.endpoints.clone(), Some(token))?;
        other.global = self.global.clone();
        Ok(other)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_remove("ORCHCTL_TOKEN").env_remove("ORCHCTL_TOKEN_FILE").env("HOME", "/nonexistent");
        c.arg("--endpoints").arg(self.endpoints.join(","));
        if let Some(t) = &self.token_file {
            c.arg("--token-file").arg(t);
        }
        c.args(&self.global).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `orchctl ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> CtlRun {
        let out = self.command(args).output().expect("run orchctl");
        CtlRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `orchctl -o json ARGS`, which must succeed; returns its JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        assert_eq!(r.code, 0, "orchctl {} failed: {r:?}", args.join(" "));
        r.json()
    }

    /// Starts `orchctl ARGS` in the background, its output piped (for `watch`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn orchctl")
    }
}
