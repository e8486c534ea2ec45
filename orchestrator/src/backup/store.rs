//! The bucket, behind the small [`ObjectStore`] trait the backup code is generic over,
//! and its S3 implementation (the SDK client built from the shared `aws-connect`
//! settings; path-style addressing for a custom endpoint such as moto). Every call is
//! bounded by the store's own timeout, longer than the control-plane calls' since a
//! part is megabytes.

use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

/// A failed object store call, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("S3 {operation} {target}: {message}")]
    Call { operation: &'static str, target: String, message: String },
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// What the backup code needs of a bucket.
pub trait ObjectStore: Send + Sync + 'static {
    /// The bucket's name (for messages).
    fn bucket(&self) -> &str;
    fn put(&self, key: &str, body: Vec<u8>) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;
    /// Every object under `prefix`, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectInfo>, StoreError>> + Send;
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A bucket on S3 (or moto).
#[derive(Clone, Debug)]
pub struct S3Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    /// A store on `bucket`, reached with `settings`; `call_timeout` bounds each call
    /// (a part's upload or download included).
    pub async fn connect(
        settings: &aws_connect::ConnectSettings,
        credentials: Option<aws_connect::Credentials>,
        bucket: &str,
        call_timeout: Duration,
    ) -> S3Store {
        let settings = aws_connect::ConnectSettings { call_timeout, max_attempts: 3, ..settings.clone() };
        let shared = aws_connect::sdk_config(&settings, credentials).await;
        // Every part carries its own SHA-256 in the manifest, checked on every read: the
        // SDK's own CRC of each request and response would be a second pass over the
        // same bytes.
        let config = aws_connect::s3_config(&shared, &settings)
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        S3Store { s3: client, bucket: bucket.to_string() }
    }

    fn error<E: std::error::Error + 'static>(
        &self,
        operation: &'static str,
        target: &str,
        e: E,
    ) -> StoreError {
        StoreError::Call {
            operation,
            target: format!("s3://{}/{target}", self.bucket),
            message: aws_connect::error_line(&e),
        }
    }
}

impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(StoreError::NotFound { bucket: self.bucket.clone(), key: key.to_string() })
            }
            Err(e) => return Err(self.error("GetObject", key, e)),
        };
        let body = out.body.collect().await.map_err(|e| self.error("GetObject", key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    out.push(ObjectInfo { key: key.to_string(), size: o.size().unwrap_or(0).max(0) as u64 });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.error("DeleteObjects", "", e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.error("DeleteObjects", "", e))?;
            let out = self
                .s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("DeleteObjects", &batch[0], e))?;
            if let Some(failed) = out.errors().first() {
                return Err(StoreError::Call {
                    operation: "DeleteObjects",
                    target: format!("s3://{}/{}", self.bucket, failed.key().unwrap_or_default()),
                    message: failed.message().unwrap_or("refused").to_string(),
                });
            }
        }
        Ok(())
    }
}
