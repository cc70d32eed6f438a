//! Reading and writing user memory as the kernel does for system calls:
//! faulting pages in as a user access would.

use mm_paging::{MapFlags, PagingArch};
use mm_types::{FrameProvider, PhysAddr, PhysMemory, VirtAddr, PAGE_BYTES};

use super::{Access, AddressSpace, FaultError};

impl<A: PagingArch, M: PhysMemory + Clone, F: FrameProvider + Clone> AddressSpace<A, M, F> {
    /// The physical address backing user address `addr` for `access`,
    /// faulting the page in and setting its accessed (and, for a write,
    /// dirty) bit as the MMU would (an emulated access: kernels use it for
    /// `copy_to_user`/`copy_from_user`, tests for "touching" memory).
    pub fn resolve(&mut self, addr: VirtAddr, access: Access) -> Result<PhysAddr, FaultError> {
        let ok = |t: &mm_paging::Translation| {
            t.flags.contains(MapFlags::USER)
                && match access {
                    Access::Read => true,
                    Access::Write => t.flags.contains(MapFlags::WRITE),
                    Access::Execute => t.flags.contains(MapFlags::EXECUTE),
                }
        };
        let t = match self.page_table().translate(addr).filter(ok) {
            Some(t) => t,
            None => {
                self.fault(addr, access)?;
                self.page_table().translate(addr).filter(ok).expect("a resolved fault leaves the page accessible")
            }
        };
        // As the MMU would (reclaim harvests these); a second walk only
        // when a bit is still clear.
        let write = access == Access::Write;
        if !t.flags.contains(MapFlags::ACCESSED) || (write && !t.flags.contains(MapFlags::DIRTY)) {
            self.page_table().set_access_bits(addr, write);
        }
        Ok(t.phys)
    }

    /// Copies `data` to user memory at `addr`, faulting pages in.
    pub fn write_user(&mut self, addr: VirtAddr, data: &[u8]) -> Result<(), FaultError> {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.checked_add(done as u64).ok_or(FaultError::NoMapping { addr })?;
            let n = ((PAGE_BYTES - a.page_offset()) as usize).min(data.len() - done);
            let phys = self.resolve(a, Access::Write)?;
            // SAFETY: the page is mapped writable in this space, which we borrow mutably; a writable
            // private page is ours alone (copy-on-write ran), a shared mapping's page is written by
            // its sharers as user memory is.
            let r = unsafe { self.mm.mem.write_bytes(phys, &data[done..done + n]) };
            r.map_err(|_| FaultError::Unreachable { frame: phys.as_u64() & !(PAGE_BYTES - 1) })?;
            done += n;
        }
        Ok(())
    }

    /// Copies user memory at `addr` into `buf`, faulting pages in.
    pub fn read_user(&mut self, addr: VirtAddr, buf: &mut [u8]) -> Result<(), FaultError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(FaultError::NoMapping { addr })?;
            let n = ((PAGE_BYTES - a.page_offset()) as usize).min(buf.len() - done);
            let phys = self.resolve(a, Access::Read)?;
            // SAFETY: the page is mapped in this space, borrowed mutably; a page shared with other
            // spaces is read-only in all of them (copy-on-write) or written by sharers as user memory
            // is.
            let r = unsafe { self.mm.mem.read_bytes(phys, &mut buf[done..done + n]) };
            r.map_err(|_| FaultError::Unreachable { frame: phys.as_u64() & !(PAGE_BYTES - 1) })?;
            done += n;
        }
        Ok(())
    }
}
