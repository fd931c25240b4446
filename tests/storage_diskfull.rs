//! Disk full for real: a small ext4 image loop-mounted (needs root, `mkfs.ext4` and loop
//! devices; otherwise the test prints why and passes without running). Appends run until the
//! file system is full: the failing append returns `StorageError::Io` (KAFKA_STORAGE_ERROR),
//! everything acknowledged before still reads back, and once space is freed appends work
//! again and survive a reopen. With less free space than a reservation step, a new segment
//! and a reopened one cannot reserve ahead: appends that fit still succeed (the file grows)
//! and the log opens.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use ringbroker::storage::batch::{build_test_batch, patch_base_offset};
use ringbroker::storage::{LogConfig, PartitionLog, StorageError};

struct Mount {
    point: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

fn mount_small_ext4(size_mib: u64) -> Result<Mount, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err("not root".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = tmp.path().join("fs.img");
    let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
    f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal"])
        .arg(&image)
        .status()
        .map_err(|e| format!("mkfs.ext4: {e}"))?;
    if !ok.success() {
        return Err("mkfs.ext4 failed".into());
    }
    let point = tmp.path().join("mnt");
    std::fs::create_dir(&point).map_err(|e| e.to_string())?;
    let ok = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&point)
        .status()
        .map_err(|e| format!("mount: {e}"))?;
    if !ok.success() {
        return Err("mount -o loop failed".into());
    }
    Ok(Mount { point, _tmp: tmp })
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        ..LogConfig::default()
    }
}

async fn scenario(root: &Path) {
    let dir = root.join("full-0");
    // Leave ~10 MiB free: the log fills it.
    let filler = root.join("filler");
    let free = {
        let s = nix_free_bytes(root);
        s.saturating_sub(10 << 20)
    };
    std::fs::write(&filler, vec![1u8; free as usize]).unwrap();
    let log = PartitionLog::open(&dir, config()).await.unwrap();
    let mut stored = Vec::new();
    let mut failed = None;
    for i in 0..10_000 {
        let mut b = build_test_batch(1, 60_000, i, i as u8);
        match log.append(Bytes::from(b.clone())).await {
            Ok(info) => {
                patch_base_offset(&mut b, info.base_offset);
                stored.push(b);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("the file system filled up");
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    println!("disk full after {} batches: {err}", stored.len());
    // Consistent: everything acknowledged reads back; nothing else is visible.
    assert_eq!(log.high_watermark(), stored.len() as i64);
    for (i, b) in stored.iter().enumerate() {
        assert_eq!(&log.read(i as i64, 1).await.unwrap().to_vec(), b);
    }
    // Still full: appends keep failing cleanly.
    assert!(
        log.append(Bytes::from(build_test_batch(1, 60_000, 0, 0)))
            .await
            .is_err()
    );
    // Space returns: appends work again.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        let mut b = build_test_batch(1, 60_000, i, 7);
        let info = log.append(Bytes::from(b.clone())).await.unwrap();
        assert_eq!(info.base_offset, stored.len() as i64);
        patch_base_offset(&mut b, info.base_offset);
        stored.push(b);
    }
    log.close().await.unwrap();
    let log = PartitionLog::open(&dir, config()).await.unwrap();
    assert_eq!(log.high_watermark(), stored.len() as i64);
    for (i, b) in stored.iter().enumerate() {
        assert_eq!(&log.read(i as i64, 1).await.unwrap().to_vec(), b);
    }
    log.close().await.unwrap();
}

/// Less room than one reservation step (1 MiB): creating and reopening a segment cannot
/// reserve ahead, yet small appends succeed and the log opens; then the data itself fills
/// the disk and fails cleanly.
async fn scenario_no_room_to_reserve(root: &Path) {
    let dir = root.join("tight-0");
    std::fs::create_dir_all(&dir).unwrap();
    let filler = root.join("filler-tight");
    let free = nix_free_bytes(root).saturating_sub(512 << 10);
    std::fs::write(&filler, vec![1u8; free as usize]).unwrap();
    let log = PartitionLog::open(&dir, config()).await.unwrap();
    let mut stored = Vec::new();
    for i in 0..10 {
        let mut b = build_test_batch(1, 1000, i, 3);
        let info = log
            .append(Bytes::from(b.clone()))
            .await
            .expect("a small append fits");
        patch_base_offset(&mut b, info.base_offset);
        stored.push(b);
    }
    log.close().await.unwrap();
    let log = PartitionLog::open(&dir, config())
        .await
        .expect("opens without room to reserve");
    assert_eq!(log.high_watermark(), stored.len() as i64);
    let failed = loop {
        let mut b = build_test_batch(1, 30_000, 0, 4);
        match log.append(Bytes::from(b.clone())).await {
            Ok(info) => {
                patch_base_offset(&mut b, info.base_offset);
                stored.push(b);
            }
            Err(e) => break e,
        }
        assert!(stored.len() < 1000, "the disk never filled");
    };
    assert!(matches!(failed, StorageError::Io { .. }), "{failed}");
    for (i, b) in stored.iter().enumerate() {
        assert_eq!(&log.read(i as i64, 1).await.unwrap().to_vec(), b);
    }
    log.close().await.unwrap();
    std::fs::remove_file(&filler).unwrap();
}

fn nix_free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is a plain C struct for which all-zero bytes are a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

#[test]
fn disk_full_fails_cleanly_and_recovers() {
    let mount = match mount_small_ext4(64) {
        Ok(m) => m,
        Err(why) => {
            println!("skipping disk-full test: {why}");
            return;
        }
    };
    let root = mount.point.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            scenario(&root).await;
            scenario_no_room_to_reserve(&root).await;
        })
        .unwrap()
        .join()
        .unwrap();
}
