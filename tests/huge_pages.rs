//! Large shared arrays ask for transparent huge pages (`MADV_HUGEPAGE`); small ones do not.
//! Whether the kernel then uses them for shared memory is the system's choice
//! (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`): the advice is what the crate controls.

use ndarray::Ix1;
use shmpar::SharedArray;

/// The `VmFlags` of this process's mapping that holds `addr`.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
    }
    panic!("no mapping holds {addr:#x}");
}

#[test]
fn large_arrays_are_advised_to_use_huge_pages() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        eprintln!("skipped: this kernel has no transparent huge pages");
        return;
    }
    let big = SharedArray::<f64, Ix1>::zeros(1 << 19).unwrap(); // 4 MiB
    let small = SharedArray::<f64, Ix1>::zeros(1 << 10).unwrap(); // 8 KiB
    let flags = vm_flags(big.as_slice().as_ptr() as usize);
    assert!(flags.split(' ').any(|f| f == "hg"), "4 MiB array: {flags}");
    let flags = vm_flags(small.as_slice().as_ptr() as usize);
    assert!(!flags.split(' ').any(|f| f == "hg"), "8 KiB array: {flags}");
}
