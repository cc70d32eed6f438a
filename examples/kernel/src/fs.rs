//! Files for the page cache: read-only files of an ext4 file system on a
//! virtio-blk disk, read through the `ext4-view` crate (this kernel writes
//! no file system of its own).
//!
//! `ext4-view` keeps its state behind reference counts that are not
//! atomic (`Rc`), so the whole file system, with every file opened on it,
//! lives in one [`Ext4Volume`] behind one lock: no reference count is
//! ever touched by two CPUs at once, which is what makes the volume safe
//! to share (and to hand to the page cache as a `FileBacking`).

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use ext4_view::{Ext4, Ext4Error, Ext4Read};
use mm_types::{BackingStore, FileBacking, FileError, FileErrorKind, FileOp, PAGE_SIZE, SLOT_SIZE};

use crate::disk::VirtioDisk;

/// The disk as `ext4-view` reads it: bytes at any offset, through whole
/// 4 KiB slots.
struct DiskReader {
    disk: VirtioDisk,
    slot: Box<[u8; SLOT_SIZE]>,
}

impl Ext4Read for DiskReader {
    fn read(&mut self, start: u64, dst: &mut [u8]) -> Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        let mut done = 0;
        while done < dst.len() {
            let at = start + done as u64;
            let (slot, off) = (at / SLOT_SIZE as u64, (at % SLOT_SIZE as u64) as usize);
            let n = (SLOT_SIZE - off).min(dst.len() - done);
            if off == 0 && n == SLOT_SIZE {
                let whole: &mut [u8; SLOT_SIZE] =
                    (&mut dst[done..done + SLOT_SIZE]).try_into().expect("a slot's length");
                self.disk.read_slot(slot, whole)?;
            } else {
                self.disk.read_slot(slot, &mut self.slot)?;
                dst[done..done + n].copy_from_slice(&self.slot[off..off + n]);
            }
            done += n;
        }
        Ok(())
    }
}

struct Volume {
    fs: Ext4,
    files: Vec<ext4_view::File>,
}

/// An ext4 file system and the files opened on it, behind one lock; see
/// the [module documentation](self).
pub struct Ext4Volume {
    inner: spin::Mutex<Volume>,
}

// SAFETY: the `Rc`s inside `ext4-view`'s types (the file system and the
// files opened on it) are created, cloned and dropped only with `inner`
// locked, and none leaves it: no two CPUs touch one reference count at
// once. Nothing else in them is tied to a CPU.
unsafe impl Send for Ext4Volume {}
// SAFETY: as for `Send`: every access goes through the lock.
unsafe impl Sync for Ext4Volume {}

impl Ext4Volume {
    /// Loads the ext4 file system on `disk` (reads and checks its
    /// superblock and group descriptors).
    pub fn load(disk: VirtioDisk) -> Result<Arc<Ext4Volume>, Ext4Error> {
        let reader = DiskReader { disk, slot: Box::new([0; SLOT_SIZE]) };
        let fs = Ext4::load(Box::new(reader))?;
        Ok(Arc::new(Ext4Volume { inner: spin::Mutex::new(Volume { fs, files: Vec::new() }) }))
    }

    /// Opens the regular file at absolute `path`, as a page cache backing.
    pub fn open(self: &Arc<Self>, path: &str) -> Result<Ext4File, Ext4Error> {
        let mut v = self.inner.lock();
        let file = v.fs.open(path)?;
        let size = file.metadata().len();
        v.files.push(file);
        Ok(Ext4File { volume: self.clone(), index: v.files.len() - 1, size })
    }
}

/// A read-only file of an [`Ext4Volume`] as the page cache reads it.
pub struct Ext4File {
    volume: Arc<Ext4Volume>,
    index: usize,
    size: u64,
}

impl FileBacking for Ext4File {
    fn size(&self) -> u64 {
        self.size
    }

    /// Pages `first..`: one seek (`ext4-view` seeks by walking the file's
    /// blocks from its start, so only when the request does not start
    /// where the last one ended), then the bytes in order; the part of a
    /// page past the end of the file is zero.
    fn read_pages(&self, first: u64, pages: &mut [&mut [u8; PAGE_SIZE]]) -> Result<(), FileError> {
        let err = |kind| FileError::page(FileOp::Read, first, kind);
        let start = first.checked_mul(PAGE_SIZE as u64).ok_or(err(FileErrorKind::BeyondEnd))?;
        if start >= self.size {
            return Err(err(FileErrorKind::BeyondEnd));
        }
        let mut v = self.volume.inner.lock();
        let file = &mut v.files[self.index];
        if file.position() != start {
            file.seek_to(start).map_err(|_| err(FileErrorKind::Io))?;
        }
        for page in pages.iter_mut() {
            let mut done = 0;
            while done < PAGE_SIZE {
                match file.read_bytes(&mut page[done..]) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(_) => return Err(err(FileErrorKind::Io)),
                }
            }
            page[done..].fill(0);
        }
        Ok(())
    }

    fn write_pages(&self, first: u64, _: &[&[u8; PAGE_SIZE]]) -> Result<(), FileError> {
        Err(FileError::page(FileOp::Write, first, FileErrorKind::ReadOnly))
    }

    fn sync(&self) -> Result<(), FileError> {
        Ok(())
    }

    fn read_only(&self) -> bool {
        true
    }
}
