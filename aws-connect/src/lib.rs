//! The AWS SDK configuration every binary of ours builds its clients from: one place
//! for the credentials chain, region, endpoint override (moto), call timeouts, retry
//! attempts and the rustls TLS stack, so the orchestrator and the provisioner reach
//! AWS the same way. Also the one-line rendering of SDK errors.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;

pub use aws_config::SdkConfig;
pub use aws_credential_types::Credentials;

/// How to reach AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// The region; `None` leaves it to the chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// One endpoint for every service (moto serves them all on one port).
    pub endpoint_url: Option<String>,
    /// Bound on one call, retries included.
    pub call_timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub max_attempts: u32,
}

impl ConnectSettings {
    /// Settings with the chain's region and the real endpoints.
    pub fn new(call_timeout: Duration) -> Self {
        Self { region: None, endpoint_url: None, call_timeout, max_attempts: 2 }
    }
}

/// The shared SDK configuration: the standard chain (environment, profile, instance
/// role), or fixed `credentials` (tools and tests talking to moto), with `settings` on
/// top. Each attempt gets half the call's bound, the TCP connect at most a second.
pub async fn sdk_config(settings: &ConnectSettings, credentials: Option<Credentials>) -> SdkConfig {
    let call = settings.call_timeout;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let attempts = settings.max_attempts.max(1);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(call.min(Duration::from_secs(1)))
                .operation_attempt_timeout(if attempts > 1 { call / 2 } else { call })
                .operation_timeout(call)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(attempts));
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(c) = credentials {
        loader = loader.credentials_provider(c);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// The S3 client settings on top of `shared`: a custom endpoint (moto) serves buckets
/// by path, not by host name.
pub fn s3_config(shared: &SdkConfig, settings: &ConnectSettings) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::from(shared).force_path_style(settings.endpoint_url.is_some())
}

/// An error and its causes on one line (SDK errors hide the service's message in
/// their sources), without repeating a cause the line already holds.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn error_line_joins_causes_once() {
        let e = Layer(
            "service error",
            Some(Box::new(Layer("AccessDenied: no\nway", Some(Box::new(Layer("AccessDenied", None)))))),
        );
        assert_eq!(error_line(&e), "service error: AccessDenied: no way");
    }
}
