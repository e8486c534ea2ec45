//! The data volume: on instance-store types, LUKS on the NVMe device with the
//! cluster's passphrase (`cryptsetup`, the passphrase on standard input only), an ext4
//! file system on the opened mapping, mounted where the server's data lives. Every step
//! looks first and does only what is missing, so a rerun after a reboot just opens and
//! mounts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// One encrypted volume.
#[derive(Debug, Clone)]
pub struct EncryptedVolume {
    pub cryptsetup: PathBuf,
    pub device: PathBuf,
    /// The device-mapper name (`/dev/mapper/<name>`).
    pub name: String,
    pub mount_point: PathBuf,
    /// Extra `luksFormat` options (tests use a cheap key derivation).
    pub format_options: Vec<String>,
}

impl EncryptedVolume {
    pub fn mapper(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.name)
    }

    /// Formats (once), opens, makes the file system (once) and mounts; returns what
    /// was done, one line each (empty: all was in place).
    pub fn ensure(&self, passphrase: &str) -> anyhow::Result<Vec<String>> {
        let mut done = Vec::new();
        let device = self.device.display().to_string();
        if !self.run(&["isLuks", &device], None).is_ok_and(|ok| ok) {
            let mut args = vec!["luksFormat", "--type", "luks2", "--batch-mode", "--key-file=-"];
            args.extend(self.format_options.iter().map(String::as_str));
            args.push(&device);
            self.checked(&args, Some(passphrase)).context("luksFormat")?;
            done.push(format!("formatted {device} as LUKS2"));
        }
        if !self.mapper().exists() {
            self.checked(&["open", "--type", "luks2", "--key-file=-", &device, &self.name], Some(passphrase))
                .context("opening the LUKS volume")?;
            done.push(format!("opened {device} as {}", self.mapper().display()));
        }
        let mapper = self.mapper().display().to_string();
        let fs = Command::new("blkid").args(["-o", "value", "-s", "TYPE", &mapper]).output();
        let has_fs = fs.is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty());
        if !has_fs {
            program("mkfs.ext4", &["-q", "-L", "mysql-data", &mapper])?;
            done.push(format!("made an ext4 file system on {mapper}"));
        }
        if !is_mounted(&self.mount_point) {
            std::fs::create_dir_all(&self.mount_point)?;
            program("mount", &[&mapper, &self.mount_point.display().to_string()])?;
            done.push(format!("mounted {mapper} at {}", self.mount_point.display()));
        }
        Ok(done)
    }

    /// Unmounts and closes (tests; a node keeps its volume).
    pub fn close(&self) -> anyhow::Result<()> {
        if is_mounted(&self.mount_point) {
            program("umount", &[&self.mount_point.display().to_string()])?;
        }
        if self.mapper().exists() {
            self.checked(&["close", &self.name], None)?;
        }
        Ok(())
    }

    /// Runs cryptsetup; `Ok(success)`.
    fn run(&self, args: &[&str], passphrase: Option<&str>) -> anyhow::Result<bool> {
        Ok(self.output(args, passphrase)?.status.success())
    }

    fn checked(&self, args: &[&str], passphrase: Option<&str>) -> anyhow::Result<()> {
        let out = self.output(args, passphrase)?;
        if !out.status.success() {
            bail!("cryptsetup {}: {}", args[0], String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn output(&self, args: &[&str], passphrase: Option<&str>) -> anyhow::Result<std::process::Output> {
        let mut child = Command::new(&self.cryptsetup)
            .args(args)
            .stdin(if passphrase.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.cryptsetup.display()))?;
        if let (Some(p), Some(mut stdin)) = (passphrase, child.stdin.take()) {
            // No newline: with --key-file=- every byte is the key.
            stdin.write_all(p.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }
}

fn program(name: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(name).args(args).output().with_context(|| format!("cannot run {name}"))?;
    if !out.status.success() {
        bail!("{name} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether something is mounted at `dir` (by `/proc/mounts`).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else { return false };
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|m| Path::new(&m.replace("\\040", " ")) == dir)
}

/// Why LUKS on a loop device cannot be tested here, if it cannot.
pub fn loop_luks_unavailable() -> Option<String> {
    if Command::new("cryptsetup").arg("--version").output().is_err() {
        return Some("cryptsetup is not installed".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop devices unavailable)".into());
    }
    if !Path::new("/dev/mapper/control").exists() {
        return Some("no /dev/mapper/control (device-mapper unavailable)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    None
}
