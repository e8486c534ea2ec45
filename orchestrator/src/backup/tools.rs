//! The command lines of the tools backups and restores run, per flavor, pure: where
//! the MySQL programs are (a minimal root run through its own loader, DESIGN.md
//! section 7, or the system's), the tools' option files (passwords go there, never in
//! arguments), `mariadb-backup` / `xtrabackup` backup and prepare, stream extraction,
//! the clone statement, and binlog replay.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::InstanceKey;

/// Where the MySQL programs are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MysqlPrograms {
    /// A minimal root holding MySQL (`usr/sbin/mysqld`, `usr/bin/mysql`, ...), run
    /// through the root's own loader and libraries. Unset: the system's programs.
    pub mysql_root: Option<PathBuf>,
}

impl MysqlPrograms {
    /// `program` (a path inside the root, e.g. `usr/bin/mysql`) as the loader and its
    /// arguments; without a root, `/` + `program` with none.
    pub fn in_root(&self, program: &str) -> (PathBuf, Vec<String>) {
        match &self.mysql_root {
            Some(root) => {
                let libs = format!(
                    "{}:{}",
                    root.join("usr/lib/x86_64-linux-gnu").display(),
                    root.join("lib/x86_64-linux-gnu").display()
                );
                (
                    root.join("lib64/ld-linux-x86-64.so.2"),
                    vec!["--library-path".into(), libs, root.join(program).display().to_string()],
                )
            }
            None => (Path::new("/").join(program), Vec::new()),
        }
    }

    /// A command running `program` from the root, or the named system program.
    pub fn command(&self, program_in_root: &str, system_name: &str) -> tokio::process::Command {
        match &self.mysql_root {
            Some(_) => {
                let (loader, args) = self.in_root(program_in_root);
                let mut c = tokio::process::Command::new(loader);
                c.args(args);
                c
            }
            None => tokio::process::Command::new(system_name),
        }
    }
}

/// A tool's option file: the server's own options when given, then the account and
/// where the server is (read by the tool's `section`: `mariadb-backup`, `xtrabackup`,
/// `client`).
pub fn option_file(
    section: &str,
    server_options: Option<&Path>,
    instance: Option<&InstanceKey>,
    socket: Option<&Path>,
    user: &str,
    password: &str,
) -> String {
    let mut text = String::new();
    if let Some(o) = server_options {
        text += &format!("!include {}\n\n", o.display());
    }
    text += &format!("[{section}]\nuser = {}\npassword = {}\n", quote_option(user), quote_option(password));
    if let Some(i) = instance {
        text += &format!("host = {}\nport = {}\n", i.host, i.port);
    }
    if let Some(s) = socket {
        text += &format!("socket = {}\n", s.display());
    }
    text
}

/// An option file value as the client library reads it back exactly: quoted (so
/// `#`, `;` and surrounding spaces stay part of it), backslashes escaped, in the
/// quote it does not hold.
pub fn quote_option(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\");
    if value.contains('\'') {
        format!("\"{escaped}\"")
    } else {
        format!("'{escaped}'")
    }
}

/// Grows a pipe to 1 MiB (the usual `/proc/sys/fs/pipe-max-size`): a backup stream
/// then moves in 1 MiB steps instead of 64 KiB ones, sixteen times fewer wake-ups of
/// the tool and of this process. Best effort: a smaller pipe only costs speed.
pub fn widen_pipe(fd: std::os::fd::RawFd) {
    const F_SETPIPE_SZ: libc::c_int = 1031;
    // SAFETY: fcntl on a pipe descriptor this process owns; failure leaves it as it was.
    unsafe {
        libc::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
    }
}

/// Writes a new file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

/// The physical backup tool's arguments (the option file first): stream xbstream to
/// standard output, the LSN files also into `lsn_dir`, incremental from `from_lsn`.
pub fn backup_arguments(
    options_file: &Path,
    datadir: Option<&Path>,
    target_dir: &Path,
    lsn_dir: &Path,
    from_lsn: Option<u64>,
    parallel: u32,
    throttle: u32,
) -> Vec<String> {
    let mut args = vec![
        format!("--defaults-file={}", options_file.display()),
        "--backup".into(),
        "--stream=xbstream".into(),
        format!("--target-dir={}", target_dir.display()),
        format!("--extra-lsndir={}", lsn_dir.display()),
        format!("--parallel={}", parallel.max(1)),
    ];
    if let Some(d) = datadir {
        args.push(format!("--datadir={}", d.display()));
    }
    if let Some(lsn) = from_lsn {
        args.push(format!("--incremental-lsn={lsn}"));
    }
    if throttle > 0 {
        args.push(format!("--throttle={throttle}"));
    }
    args
}

/// Which tool prepares a restored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareTool {
    /// `mariadb-backup`: every step a plain `--prepare`.
    MariadbBackup,
    /// `xtrabackup`: every step but the last with `--apply-log-only`, so the
    /// incrementals after it still apply.
    Xtrabackup,
}

/// The prepare runs of a chain extracted into `full` and `incrementals` (in order).
pub fn prepare_runs(tool: PrepareTool, full: &Path, incrementals: &[PathBuf]) -> Vec<Vec<String>> {
    let steps = 1 + incrementals.len();
    (0..steps)
        .map(|i| {
            let mut args = vec!["--prepare".to_string()];
            if tool == PrepareTool::Xtrabackup && i + 1 < steps {
                args.push("--apply-log-only".into());
            }
            args.push(format!("--target-dir={}", full.display()));
            if i > 0 {
                args.push(format!("--incremental-dir={}", incrementals[i - 1].display()));
            }
            args
        })
        .collect()
}

/// `mbstream` / `xbstream`: extract a stream read from standard input into `dir`.
pub fn extract_arguments(dir: &Path) -> Vec<String> {
    vec!["-x".into(), "-C".into(), dir.display().to_string()]
}

/// The clone plugin copying the server's data into `dir` (which must not exist).
pub fn clone_statement(dir: &Path) -> String {
    format!(
        "CLONE LOCAL DATA DIRECTORY = '{}'",
        dir.display().to_string().replace('\\', "\\\\").replace('\'', "''")
    )
}

/// The binlog reader's arguments for a replay of `files` (in order, one session).
pub fn replay_arguments(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

/// The client's arguments for the replay session (the option file first): stop at
/// the first error.
pub fn replay_client_arguments(options_file: &Path) -> Vec<String> {
    vec![
        format!("--defaults-file={}", options_file.display()),
        "--batch".into(),
        "--skip-reconnect".into(),
        // Row events' base64 and any statement's bytes go through as they are.
        "--binary-mode".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_hold_the_password_and_arguments_never_do() {
        let key: InstanceKey = "10.0.1.5:3306".parse().unwrap();
        let text = option_file(
            "mariadb-backup",
            Some(Path::new("/etc/my.cnf")),
            Some(&key),
            None,
            "backup",
            "s3cret",
        );
        assert!(text.starts_with("!include /etc/my.cnf\n"));
        assert!(text.contains(
            "[mariadb-backup]\nuser = 'backup'\npassword = 's3cret'\nhost = 10.0.1.5\nport = 3306\n"
        ));
        let args = backup_arguments(
            Path::new("/w/b.cnf"),
            Some(Path::new("/var/lib/mysql")),
            Path::new("/w/t"),
            Path::new("/w/lsn"),
            Some(44404),
            4,
            0,
        );
        assert_eq!(args[0], "--defaults-file=/w/b.cnf");
        for want in [
            "--stream=xbstream",
            "--extra-lsndir=/w/lsn",
            "--incremental-lsn=44404",
            "--parallel=4",
            "--datadir=/var/lib/mysql",
        ] {
            assert!(args.contains(&want.to_string()), "{want}");
        }
        assert!(!args.join(" ").contains("s3cret"));
        let socket = option_file("client", None, None, Some(Path::new("/run/m.sock")), "root", "p");
        assert_eq!(socket, "[client]\nuser = 'root'\npassword = 'p'\nsocket = /run/m.sock\n");
        assert_eq!(quote_option("a#b;c\\d"), "'a#b;c\\\\d'");
        assert_eq!(quote_option("it's"), "\"it's\"");
    }

    #[test]
    fn xtrabackup_applies_the_log_only_until_the_last_incremental() {
        let incs = vec![PathBuf::from("/r/i1"), PathBuf::from("/r/i2")];
        let x = prepare_runs(PrepareTool::Xtrabackup, Path::new("/r/full"), &incs);
        assert_eq!(
            x,
            vec![
                vec!["--prepare", "--apply-log-only", "--target-dir=/r/full"],
                vec!["--prepare", "--apply-log-only", "--target-dir=/r/full", "--incremental-dir=/r/i1"],
                vec!["--prepare", "--target-dir=/r/full", "--incremental-dir=/r/i2"],
            ]
        );
        let m = prepare_runs(PrepareTool::MariadbBackup, Path::new("/r/full"), &incs);
        assert!(m.iter().all(|a| !a.contains(&"--apply-log-only".to_string())));
        assert_eq!(
            prepare_runs(PrepareTool::Xtrabackup, Path::new("/r/f"), &[]),
            vec![vec!["--prepare", "--target-dir=/r/f"]]
        );
    }

    #[test]
    fn the_root_runs_programs_through_its_loader() {
        let p = MysqlPrograms { mysql_root: Some(PathBuf::from("/opt/mysql-root")) };
        let (loader, args) = p.in_root("usr/bin/mysqlbinlog");
        assert_eq!(loader, PathBuf::from("/opt/mysql-root/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(args.last().unwrap(), "/opt/mysql-root/usr/bin/mysqlbinlog");
        assert_eq!(MysqlPrograms::default().in_root("usr/bin/mysql").0, PathBuf::from("/usr/bin/mysql"));
        assert_eq!(clone_statement(Path::new("/d/it's")), "CLONE LOCAL DATA DIRECTORY = '/d/it''s'");
    }
}
