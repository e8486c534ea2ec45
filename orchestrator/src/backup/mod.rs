//! Backups to S3, the continuous binlog archive, and point-in-time restore (DESIGN.md
//! section 13).
//!
//! Pure core:
//! - [`manifest`]: a complete backup's manifest (written last: no manifest, no
//!   backup), the bucket layout, ids, the facts the backup tools leave behind;
//! - [`binlog`]: reading binary logs by transaction (GTID, byte range, commit time);
//! - [`archive`]: the archive's index entries, its history across failovers, gaps,
//!   where a new master's archiver starts, what a replay applies to reach a point;
//! - [`catalog`]: chains, `backup list`, restore plans, the schedule, retention;
//! - [`source`]: which instance a backup copies;
//! - [`parts`]: one stored part (zstd frame, optionally AES-256-GCM sealed);
//! - [`tools`]: the command lines of the backup, prepare, extract and replay tools.
//!
//! Edges and shell: [`store`] (the bucket behind a small trait; S3), [`pipeline`]
//! (parallel part upload and download with bounded memory), [`jobs`] (watchable
//! progress), [`service`] (the peer's backup side: catalog, taking, deleting and
//! verifying backups under the `backup_lock`), [`materialize`] (a chain made a data
//! directory: download, extract, prepare), [`restore`], [`archiver`] (the
//! master's peer archives its binary logs), [`maintenance`] (the leader's schedule,
//! retention and problems).

pub mod archive;
pub mod archiver;
pub mod binlog;
pub mod catalog;
pub mod jobs;
pub mod maintenance;
pub mod manifest;
pub mod materialize;
pub mod parts;
pub mod pipeline;
pub mod restore;
pub mod service;
pub mod source;
pub mod store;
pub mod tools;
