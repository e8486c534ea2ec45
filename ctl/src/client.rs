//! How `orchctl` reaches the peers: the endpoints (any peer answers; the next one is
//! tried when a peer is down), the bearer token, TLS, and the exit codes errors map to.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_proto::v1::orchestrator_client::OrchestratorClient;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Refused = 3,
    Auth = 4,
    Unreachable = 5,
}

/// An error as the operator reads it: one line and an exit code.
#[derive(Debug)]
pub struct CtlError {
    pub exit: Exit,
    pub message: String,
}

impl CtlError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Exit::Failed, message)
    }

    /// What a peer's refusal means for the operator.
    pub fn from_status(endpoint: &str, s: &Status) -> Self {
        let exit = match s.code() {
            Code::InvalidArgument => Exit::Usage,
            Code::FailedPrecondition => Exit::Refused,
            Code::Unauthenticated | Code::PermissionDenied => Exit::Auth,
            Code::Unavailable => Exit::Unreachable,
            _ => Exit::Failed,
        };
        let what = match s.code() {
            Code::InvalidArgument => "invalid",
            Code::NotFound => "not found",
            Code::FailedPrecondition => "refused",
            Code::Unauthenticated => "not authenticated",
            Code::PermissionDenied => "not permitted",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "no answer in time",
            _ => "failed",
        };
        let message = s.message().trim_start_matches("refused: ").replace('\n', " ");
        let hint = if s.code() == Code::Unauthenticated {
            " (give a token: --token-file, ORCHCTL_TOKEN_FILE or ORCHCTL_TOKEN)"
        } else {
            ""
        };
        CtlError::new(exit, format!("{what}: {message}{hint} [{endpoint}]"))
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `~/.config/orchctl/config.toml` (or `--config` / `ORCHCTL_CONFIG`); flags and the
/// environment take precedence.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub timeout_s: Option<u64>,
}

impl FileConfig {
    /// Reads `path`; a missing default file is an empty config.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, CtlError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                CtlError::usage(format!("config {}: {}", path.display(), e.message().replace('\n', " ")))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(FileConfig::default()),
            Err(e) => Err(CtlError::usage(format!("cannot read config {}: {e}", path.display()))),
        }
    }

    /// The default place.
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("orchctl").join("config.toml"))
    }
}

/// Reads a token file (trailing newline ignored).
pub fn read_token(path: &Path) -> Result<String, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::new(Exit::Auth, format!("cannot read token file {}: {e}", path.display())))?;
    let token = text.trim_end_matches(['\n', '\r']).to_string();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CtlError::new(Exit::Auth, format!("token file {} holds no token", path.display())));
    }
    Ok(token)
}

/// A connection to whichever peer answers.
pub struct Client {
    endpoints: Vec<String>,
    token: Option<String>,
    tls: Option<ClientTlsConfig>,
    pub timeout: Duration,
}

/// Whether a failed call may be sent to another peer: it did not reach one that could
/// act (a transport failure, or a peer with no leader), or it only read.
fn try_next(status: &Status, read_only: bool) -> bool {
    let maybe_done = status.metadata().get("orch-outcome").is_some_and(|v| v == "unknown");
    match status.code() {
        Code::Unavailable => read_only || !maybe_done,
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => read_only,
        _ => false,
    }
}

impl Client {
    pub fn new(
        endpoints: Vec<String>,
        token: Option<String>,
        ca_cert: Option<&Path>,
        server_name: Option<String>,
        timeout: Duration,
    ) -> Result<Client, CtlError> {
        if endpoints.is_empty() {
            return Err(CtlError::usage("no endpoint: give --endpoints host:3000[,host:3000...]"));
        }
        let tls = match ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    CtlError::usage(format!("cannot read CA certificate {}: {e}", path.display()))
                })?;
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
                if let Some(name) = server_name {
                    tls = tls.domain_name(name);
                }
                Some(tls)
            }
            None => None,
        };
        Ok(Client { endpoints, token, tls, timeout })
    }

    fn channel(&self, endpoint: &str, timeout: Duration) -> Result<Endpoint, CtlError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut e = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
            .map_err(|_| CtlError::usage(format!("`{endpoint}` is not host:port")))?
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .timeout(timeout);
        if let Some(tls) = &self.tls {
            e = e.tls_config(tls.clone()).map_err(|e| CtlError::usage(format!("TLS settings: {e}")))?;
        }
        Ok(e)
    }

    /// A request with the token attached.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(token) = &self.token {
            if let Ok(v) = format!("Bearer {token}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }

    /// Calls `f` on the first peer that answers. `read_only` calls also move on past a
    /// peer that times out; a mutation never is sent twice when it may have run.
    pub async fn call<T, F, Fut>(&self, read_only: bool, timeout: Duration, f: F) -> Result<T, CtlError>
    where
        F: Fn(OrchestratorClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = None;
        for endpoint in &self.endpoints {
            let channel = match self.channel(endpoint, timeout)?.connect().await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(format!("{endpoint}: {}", connect_error(&e)));
                    continue;
                }
            };
            let client = OrchestratorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            match f(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if try_next(&s, read_only) || (read_only && is_transport(&s)) => {
                    last = Some(format!("{endpoint}: {}", s.message().replace('\n', " ")));
                }
                Err(s) if is_transport(&s) => {
                    return Err(CtlError::new(
                        Exit::Unreachable,
                        format!("cannot talk to {endpoint}: {} (TLS on one side only?)", s.message()),
                    ))
                }
                Err(s) => return Err(CtlError::from_status(endpoint, &s)),
            }
        }
        Err(CtlError::new(
            Exit::Unreachable,
            format!("no peer could answer; last: {}", last.unwrap_or_else(|| "no endpoint".into())),
        ))
    }

    /// Opens a `Watch` stream on the first peer that accepts it.
    pub async fn watch(
        &self,
        cluster: &str,
    ) -> Result<(String, tonic::Streaming<orch_proto::v1::WatchEvent>), CtlError> {
        let request = orch_proto::v1::WatchRequest { cluster: cluster.to_string() };
        self.open_stream(|mut client, r| async move { client.watch(r).await }, request).await
    }

    /// Opens a `WatchJob` stream on the first peer that accepts it.
    pub async fn watch_job(
        &self,
        id: &str,
    ) -> Result<(String, tonic::Streaming<orch_proto::v1::BackupJob>), CtlError> {
        let request = orch_proto::v1::WatchJobRequest { id: id.to_string() };
        self.open_stream(|mut client, r| async move { client.watch_job(r).await }, request).await
    }

    /// Opens a server stream with `open` on the first peer that accepts it: a stream
    /// lives as long as the operator watches, so only the connection is timed.
    async fn open_stream<M, T, F, Fut>(&self, open: F, message: M) -> Result<(String, T), CtlError>
    where
        M: Clone,
        F: Fn(OrchestratorClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last = None;
        for endpoint in &self.endpoints {
            let e = self.channel(endpoint, self.timeout)?.timeout(Duration::from_secs(365 * 24 * 3600));
            let channel = match e.connect().await {
                Ok(c) => c,
                Err(err) => {
                    last = Some(format!("{endpoint}: {}", connect_error(&err)));
                    continue;
                }
            };
            match open(OrchestratorClient::new(channel), self.request(message.clone())).await {
                Ok(stream) => return Ok((endpoint.clone(), stream.into_inner())),
                Err(s) if try_next(&s, true) => last = Some(format!("{endpoint}: {}", s.message())),
                Err(s) => return Err(CtlError::from_status(endpoint, &s)),
            }
        }
        Err(CtlError::new(
            Exit::Unreachable,
            format!("no peer could answer; last: {}", last.unwrap_or_else(|| "no endpoint".into())),
        ))
    }
}

/// Whether the call failed below gRPC (the connection or HTTP/2), not in the peer.
fn is_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some())
}

/// A transport error with its cause ("connection refused"), on one line.
fn connect_error(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        let cases = [
            (Status::failed_precondition("refused: stale"), Exit::Refused),
            (Status::unauthenticated("no token"), Exit::Auth),
            (Status::permission_denied("read"), Exit::Auth),
            (Status::invalid_argument("target: bad"), Exit::Usage),
            (Status::not_found("no cluster"), Exit::Failed),
            (Status::unavailable("no leader"), Exit::Unreachable),
        ];
        for (s, exit) in cases {
            let e = CtlError::from_status("a:3000", &s);
            assert_eq!(e.exit, exit, "{s:?}");
            assert!(e.message.ends_with("[a:3000]") && !e.message.contains('\n'), "{}", e.message);
        }
        assert_eq!(
            CtlError::from_status("a", &Status::failed_precondition("refused: stale")).message,
            "refused: stale [a]"
        );
        assert!(try_next(&Status::unavailable("x"), false));
        assert!(
            !try_next(&Status::deadline_exceeded("x"), false),
            "a mutation that may have run is not resent"
        );
        assert!(try_next(&Status::deadline_exceeded("x"), true));
        let mut maybe = Status::unavailable("outcome unknown: not committed");
        maybe.metadata_mut().insert("orch-outcome", "unknown".parse().unwrap());
        assert!(!try_next(&maybe, false), "a write that may still commit is not sent again");
    }

    #[test]
    fn config_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        assert_eq!(FileConfig::load(&path, false).unwrap(), FileConfig::default());
        assert_eq!(FileConfig::load(&path, true).unwrap_err().exit, Exit::Usage);
        std::fs::write(&path, "endpoints = [\"a:3000\"]\ntoken_file = \"/t\"\n").unwrap();
        let c = FileConfig::load(&path, true).unwrap();
        assert_eq!(c.endpoints, vec!["a:3000"]);
        std::fs::write(&path, "endpoint = \"a\"\n").unwrap();
        assert!(FileConfig::load(&path, true).unwrap_err().message.contains("endpoint"));
        std::fs::write(&path, "\n").unwrap();
        let token = dir.path().join("t");
        std::fs::write(&token, "orch_x\n").unwrap();
        assert_eq!(read_token(&token).unwrap(), "orch_x");
    }
}
