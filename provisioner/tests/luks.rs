//! The bootstrap's encrypted data volume on a real LUKS2 device: a loop device over a
//! sparse file stands in for the instance-store NVMe. Formats, opens, makes the file
//! system and mounts; a second run (as after a reboot, once closed) only opens and
//! mounts, and the data written before is still there; the wrong passphrase is refused.
//! Where loop devices, device-mapper, `cryptsetup` or root are missing, the test says
//! why in one line and passes without running.

use std::path::PathBuf;
use std::process::Command;

use provisioner::bootstrap::storage::{is_mounted, loop_luks_unavailable, EncryptedVolume};

/// A loop device over a sparse file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn over(file: &std::path::Path) -> LoopDevice {
        let out = Command::new("losetup").args(["--find", "--show"]).arg(file).output().expect("losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        LoopDevice(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn luks_volume_on_a_loop_device_is_made_once_and_reopened() {
    if let Some(reason) = loop_luks_unavailable() {
        eprintln!("skipped: LUKS on a loop device cannot run here: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("nvme.img");
    std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let device = LoopDevice::over(&image);
    let volume = EncryptedVolume {
        cryptsetup: "cryptsetup".into(),
        device: device.0.clone(),
        name: format!("orch-test-{}", std::process::id()),
        mount_point: dir.path().join("data"),
        // A cheap key derivation: the test is about the steps, not the KDF.
        format_options: vec![
            "--pbkdf".into(),
            "pbkdf2".into(),
            "--pbkdf-force-iterations".into(),
            "1000".into(),
        ],
    };
    let passphrase = "correct horse battery staple";
    let first = volume.ensure(passphrase).expect("first run");
    assert_eq!(first.len(), 4, "format, open, mkfs, mount: {first:?}");
    assert!(is_mounted(&volume.mount_point));
    std::fs::write(volume.mount_point.join("ibdata1"), b"kept").unwrap();

    // After a reboot: closed, then the bootstrap runs again.
    volume.close().unwrap();
    assert!(!is_mounted(&volume.mount_point));
    assert!(volume.ensure("wrong passphrase").is_err(), "a wrong passphrase opens nothing");
    let again = volume.ensure(passphrase).expect("second run");
    assert_eq!(again.len(), 2, "only open and mount: {again:?}");
    assert_eq!(std::fs::read(volume.mount_point.join("ibdata1")).unwrap(), b"kept");
    assert!(volume.ensure(passphrase).unwrap().is_empty(), "a third run does nothing");
    volume.close().unwrap();
}
