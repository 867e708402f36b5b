//! Arrays other programs can see: `.npy` files mapped `MAP_SHARED`, and named POSIX shared
//! memory segments (what Python's `multiprocessing.shared_memory` opens).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ndarray::{Dimension, IntoDimension, IxDyn};
use ndarray_npy::npy::header::{Header, Layout};
use py_literal::Value as PyValue;

use super::array::SharedArray;
use super::element::Element;
use super::region::Region;
use crate::error::{Error, Result};
use crate::sys;

const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// A named segment starts with this header; the elements follow at `NAMED_OFFSET`.
const NAMED_MAGIC: &[u8; 8] = b"SHMPARv1";
/// Where a named segment's elements start, after shmpar's header (numpy:
/// `np.ndarray(shape, dtype, buffer=shm.buf, offset=shmpar.NAMED_OFFSET)`, i.e. 128).
///
/// ```
/// assert_eq!(shmpar::NAMED_OFFSET, 128);
/// ```
pub const NAMED_OFFSET: usize = 128;

fn shape_dim<D: Dimension>(shape: &[usize], what: &str) -> Result<D> {
    D::from_dimension(&IxDyn(shape)).ok_or_else(|| {
        Error::invalid(format!(
            "{what} has {} axes, but the array type wants {}",
            shape.len(),
            D::NDIM.map_or("any number".to_string(), |n| n.to_string())
        ))
    })
}

/// The header of a `.npy` file: dtype, order, shape, and where the data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    data_offset: usize,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{} is not a usable .npy file: {why}",
        path.display()
    ))
}

/// Reads and checks the header (magic, version 1-3, the dict numpy writes).
fn read_npy_header(path: &Path, file: &mut File) -> Result<NpyHeader> {
    let mut prefix = [0u8; 12];
    let n = file
        .read(&mut prefix)
        .map_err(|e| Error::io(format!("could not read {}", path.display()), e))?;
    let end = npy_header_end(&prefix[..n]).map_err(|why| bad(path, why))?;
    if end > MAX_HEADER {
        return Err(bad(
            path,
            format!("its header is {end} bytes long, past the {MAX_HEADER} this reader accepts"),
        ));
    }
    // The declared length is checked against the file before anything is allocated for it.
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("could not stat {}", path.display()), e))?
        .len();
    if end as u64 > file_len {
        return Err(bad(path, "the file is shorter than its header"));
    }
    let mut head = vec![0u8; end];
    std::io::Seek::seek(file, std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut head))
        .map_err(|_| bad(path, "the file is shorter than its header"))?;
    parse_npy_header(&head).map_err(|why| bad(path, why))
}

/// Where a `.npy` header ends (the data's offset), from its first bytes (at least 10, 12 for
/// versions 2 and 3): the magic, the version, the header's length.
fn npy_header_end(prefix: &[u8]) -> std::result::Result<usize, String> {
    if prefix.len() < 10 || &prefix[..6] != NPY_MAGIC {
        return Err("no NUMPY magic at its start".into());
    }
    match prefix[6] {
        1 => Ok(10 + usize::from(u16::from_le_bytes([prefix[8], prefix[9]]))),
        2 | 3 if prefix.len() >= 12 => {
            let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
            usize::try_from(len)
                .ok()
                .and_then(|len| len.checked_add(12))
                .ok_or_else(|| "its header length does not fit in memory".to_string())
        }
        v => Err(format!("format version {v} is not supported")),
    }
}

/// The longest header read (numpy refuses headers over 10,000 bytes by default; its own
/// headers are a few hundred): a longer one is an error before it is parsed, since the
/// literal parser's time grows with it.
const MAX_HEADER: usize = 64 * 1024;
/// The deepest nesting of brackets accepted (numpy's dictionaries nest two or three deep): the
/// literal parser recurses once per level, so a deeper header could overflow the stack.
const MAX_NESTING: usize = 32;

/// Parses a whole `.npy` header (`head` holds at least [`npy_header_end`] bytes) with
/// ndarray-npy, which reads the dictionary as the Python literal it is (any spacing, key order,
/// quoting or trailing comma numpy writes): any bytes give a header or a reason, never a panic.
fn parse_npy_header(head: &[u8]) -> std::result::Result<NpyHeader, String> {
    let end = npy_header_end(head)?;
    if end > MAX_HEADER {
        return Err(format!(
            "its header is {end} bytes long, past the {MAX_HEADER} this reader accepts"
        ));
    }
    let head = head
        .get(..end)
        .ok_or("the file is shorter than its header")?;
    let dict = &head[if head[6] == 1 { 10 } else { 12 }..];
    let mut depth = 0usize;
    for &c in dict {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(format!(
                "its header nests brackets deeper than {MAX_NESTING} levels"
            ));
        }
    }
    let header = match Header::from_reader(&mut &head[..]) {
        Ok(h) => h,
        // The forms numpy itself filters before it parses: Python 2's long integers
        // (`(3L, 4L)`), a dictionary spread over lines, no final newline.
        Err(first) => numpy_filtered(head)
            .and_then(|h| Header::from_reader(&mut &h[..]).ok())
            .ok_or_else(|| {
                // ndarray-npy 0.10 names a missing shape "shaper"; a syntax error quotes the
                // whole header, which is cut short here.
                let why = first.to_string().replace("key: shaper", "key: shape");
                match why.char_indices().nth(200) {
                    Some((at, _)) => format!("{}...", &why[..at]),
                    None => why,
                }
            })?,
    };
    let descr = header
        .type_descriptor
        .as_string()
        .ok_or_else(|| {
            format!(
                "its dtype {} is a structured or nested dtype, which shmpar cannot map",
                header.type_descriptor
            )
        })?
        .clone();
    Ok(NpyHeader {
        descr,
        fortran_order: header.layout.is_fortran(),
        shape: header.shape,
        data_offset: end,
    })
}

/// The header as numpy's reader would see it after its own clean-up: each `L` that ends a
/// number dropped, line breaks inside the dictionary made spaces, one final newline, and the
/// length re-measured; `None` when nothing changes.
fn numpy_filtered(head: &[u8]) -> Option<Vec<u8>> {
    let start = if head[6] == 1 { 10 } else { 12 };
    let text = &head[start..];
    let mut keep: Vec<u8> = text
        .iter()
        .enumerate()
        .filter(|&(i, &c)| !(c == b'L' && i > 0 && text[i - 1].is_ascii_digit()))
        .map(|(_, &c)| if c == b'\n' || c == b'\r' { b' ' } else { c })
        .collect();
    keep.push(b'\n');
    if keep == text {
        return None;
    }
    let mut out = head[..8].to_vec();
    if head[6] == 1 {
        out.extend(u16::try_from(keep.len()).ok()?.to_le_bytes());
    } else {
        out.extend(u32::try_from(keep.len()).ok()?.to_le_bytes());
    }
    out.extend(keep);
    Some(out)
}

/// The header numpy would write for `shape` (written by ndarray-npy: version 1.0 unless the
/// dictionary needs more, padded so that the data starts at a multiple of 64 bytes).
fn npy_header_bytes<A: Element>(shape: &[usize]) -> Result<Vec<u8>> {
    Header {
        type_descriptor: PyValue::String(A::DTYPE.to_string()),
        layout: Layout::Standard,
        shape: shape.to_vec(),
    }
    .to_bytes()
    .map_err(|e| Error::invalid(format!("no .npy header holds this shape: {e}")))
}

impl<A: Element, D: Dimension> SharedArray<A, D> {
    /// Maps an existing `.npy` file (as numpy's `np.save` writes it) `MAP_SHARED`: no copy, no
    /// load; a file larger than RAM works, the kernel pages it in and out. Writes through
    /// [`view_mut`](Self::view_mut) go to the file. A pool reduces it like any other array.
    ///
    /// Checked at open, so that a bad file is an error now rather than a SIGBUS later: the magic
    /// and version, the dtype (it must be `A::DTYPE`), C order (Fortran order is refused), the
    /// number of axes, and that the file holds all the data its header promises.
    ///
    /// ```
    /// use ndarray::Ix2;
    /// use shmpar::SharedArray;
    /// # fn main() -> shmpar::Result<()> {
    /// # let path = std::env::temp_dir().join(format!("shmpar-doc-open-{}.npy", std::process::id()));
    /// // SAFETY: a file of our own that nothing else maps or writes.
    /// unsafe { SharedArray::<f64, Ix2>::create_npy(&path, (3, 4)) }?.view_mut().fill(2.0);
    /// // SAFETY: as above.
    /// let a = unsafe { SharedArray::<f64, Ix2>::open_npy(&path) }?;
    /// assert_eq!(a.view().sum(), 24.0);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Safety
    /// The array hands out `&` and `&mut` views of the file's bytes, so nothing else may change
    /// them while this array lives, in this process or another (memmap2's rule for
    /// `MmapMut::map_mut`): no other mapping of the file that is written (another `SharedArray`
    /// from the same path, numpy's `np.memmap` or `np.load(mmap_mode='r+')`, a C library), no
    /// write(2) to it, and no truncation (which turns reads into SIGBUS). Pool workers that
    /// read it through this array are fine: they follow its borrows.
    pub unsafe fn open_npy(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("could not open {}", path.display()), e))?;
        let h = read_npy_header(path, &mut file)?;
        if h.descr != A::DTYPE {
            return Err(bad(
                path,
                format!(
                    "its dtype is '{}', not '{}' ({})",
                    h.descr,
                    A::DTYPE,
                    std::any::type_name::<A>()
                ),
            ));
        }
        if h.fortran_order {
            return Err(bad(
                path,
                "it is in Fortran order; save it with np.ascontiguousarray first",
            ));
        }
        let dim: D = shape_dim(&h.shape, &format!("{}", path.display()))?;
        let need = super::array::byte_len::<A>(&h.shape)
            .ok()
            .and_then(|b| b.checked_add(h.data_offset))
            .ok_or_else(|| bad(path, "its shape overflows"))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("could not stat {}", path.display()), e))?
            .len() as usize;
        if len < need {
            return Err(bad(
                path,
                format!("it is truncated: {len} bytes, the header promises {need}"),
            ));
        }
        let region = Region::from_file(file, len, None, false)?;
        SharedArray::from_region(region, h.data_offset, dim)
    }

    /// Creates (or replaces) a `.npy` file of `shape`, zero-filled and sparse (no disk space
    /// until written), mapped `MAP_SHARED`; numpy reads it with `np.load(path)` or
    /// `np.load(path, mmap_mode='r')`.
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::SharedArray;
    /// # fn main() -> shmpar::Result<()> {
    /// # let path = std::env::temp_dir().join(format!("shmpar-doc-create-{}.npy", std::process::id()));
    /// // SAFETY: a file of our own that nothing else maps or writes.
    /// let mut a = unsafe { SharedArray::<u16, Ix1>::create_npy(&path, 1000) }?;
    /// a.as_slice_mut()[999] = 7;
    /// drop(a);
    /// // SAFETY: as above.
    /// assert_eq!(unsafe { SharedArray::<u16, Ix1>::open_npy(&path) }?.as_slice()[999], 7);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Safety
    /// An existing file at `path` is truncated and refilled: nothing may map it (another
    /// `SharedArray` opened from it, numpy's `np.memmap`, ...) while this runs or while the
    /// new array lives, and nothing may write it behind the array's back (see
    /// [`open_npy`](Self::open_npy)). A shape that does not fit is refused before the file is
    /// touched.
    pub unsafe fn create_npy<Sh: IntoDimension<Dim = D>>(
        path: impl AsRef<Path>,
        shape: Sh,
    ) -> Result<Self> {
        let path = path.as_ref();
        let dim = shape.into_dimension();
        let header = npy_header_bytes::<A>(dim.slice())?;
        // Every check before the file is opened: a refused shape leaves an existing file alone.
        let total = super::array::byte_len::<A>(dim.slice())?
            .checked_add(header.len())
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid("the array's size overflows"))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(format!("could not create {}", path.display()), e))?;
        file.write_all(&header)
            .and_then(|()| file.set_len(total as u64))
            .map_err(|e| Error::io(format!("could not size {}", path.display()), e))?;
        let region = Region::from_file(file, total, None, false)?;
        SharedArray::from_region(region, header.len(), dim)
    }

    /// Creates a named shared memory segment holding a zero-filled array, for other programs
    /// (numpy) to attach to. `name` must not contain `/`; `None` picks a random 128-bit name
    /// (`shmpar-<32 hex digits>`). Created exclusively (an existing name is
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)) with mode 0600. The segment is removed when this array is
    /// dropped in the process that created it; if that process is killed first,
    /// [`cleanup_stale`](crate::cleanup_stale) removes it.
    ///
    /// numpy attaches with `SharedMemory(name=...)` and
    /// `np.ndarray(shape, dtype, buffer=shm.buf, offset=128)` (see `examples/numpy_interop.py`).
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::SharedArray;
    /// # fn main() -> shmpar::Result<()> {
    /// let a = SharedArray::<f64, Ix1>::create_named(None, 16)?;
    /// let name = a.name().unwrap().to_string();
    /// // SAFETY: the same memory as `a`, which is not written while `b` lives.
    /// let b = unsafe { SharedArray::<f64, Ix1>::open_named(&name) }?;
    /// assert_eq!(b.len(), 16);
    /// drop((a, b));
    /// // SAFETY: nothing maps it any more (it is removed with its owner).
    /// assert!(unsafe { SharedArray::<f64, Ix1>::open_named(&name) }.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_named<Sh: IntoDimension<Dim = D>>(name: Option<&str>, shape: Sh) -> Result<Self> {
        let dim = shape.into_dimension();
        if dim.ndim() > 8 {
            return Err(Error::invalid("a named array has at most 8 axes"));
        }
        let name = match name {
            Some(n) if n.is_empty() || n.contains('/') || n.len() > 200 => {
                return Err(Error::invalid(format!(
                    "'{n}' is not a valid segment name (no '/', 1 to 200 bytes)"
                )));
            }
            Some(n) => n.to_string(),
            None => format!(
                "shmpar-{:032x}",
                sys::random_128().map_err(|e| Error::io("could not get random bytes", e))?
            ),
        };
        let bytes = super::array::byte_len::<A>(dim.slice())?;
        let fd = sys::shm_open(&name, true).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::invalid(format!(
                    "a shared memory segment named '{name}' already exists"
                ))
            } else {
                Error::io(
                    format!("could not create the shared memory segment '{name}'"),
                    e,
                )
            }
        })?;
        let mut file = File::from(fd);
        let mut header = [0u8; NAMED_OFFSET];
        header[..8].copy_from_slice(NAMED_MAGIC);
        header[8..8 + A::DTYPE.len()].copy_from_slice(A::DTYPE.as_bytes());
        header[16..24].copy_from_slice(&(dim.ndim() as u64).to_le_bytes());
        for (i, &n) in dim.slice().iter().enumerate() {
            header[24 + 8 * i..32 + 8 * i].copy_from_slice(&(n as u64).to_le_bytes());
        }
        header[88..96].copy_from_slice(&(sys::pid() as u64).to_le_bytes());
        let total = NAMED_OFFSET + bytes;
        let written = file
            .write_all(&header)
            .and_then(|()| file.set_len(total as u64));
        if let Err(e) = written {
            let _ = sys::shm_unlink(&name);
            return Err(Error::io(format!("could not size the segment '{name}'"), e));
        }
        match Region::from_file(file, total, Some(name.clone()), true) {
            Ok(region) => SharedArray::from_region(region, NAMED_OFFSET, dim),
            Err(e) => {
                let _ = sys::shm_unlink(&name);
                Err(e)
            }
        }
    }

    /// Opens a named segment made by [`create_named`](Self::create_named) (in this or another
    /// process), checking its header: the dtype must be `A::DTYPE` and the axes match `D`.
    /// Dropping the opened array never removes the segment; its creator does.
    ///
    /// ```
    /// use ndarray::Ix1;
    /// use shmpar::{ErrorKind, SharedArray};
    /// // SAFETY: nothing is mapped (there is no such segment).
    /// let err = unsafe { SharedArray::<f32, Ix1>::open_named("shmpar-no-such-segment") }.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Io);
    /// ```
    ///
    /// # Safety
    /// The segment is shared memory that other processes map too (its creator, numpy). This
    /// array hands out `&` and `&mut` views of it, so while it lives no other process and no
    /// other handle may write the elements it views (or read them while this one writes
    /// through `view_mut`): the program must order such accesses itself (one writer at a
    /// time, a barrier, a lock). Pool workers that use it through this array follow its
    /// borrows.
    pub unsafe fn open_named(name: &str) -> Result<Self> {
        let fd = sys::shm_open(name, false).map_err(|e| {
            Error::io(
                format!("could not open the shared memory segment '{name}'"),
                e,
            )
        })?;
        let mut file = File::from(fd);
        let mut header = [0u8; NAMED_OFFSET];
        file.read_exact(&mut header)
            .map_err(|_| Error::invalid(format!("'{name}' is too short to be a shmpar segment")))?;
        let (dtype, shape) =
            parse_named_header(&header).map_err(|why| Error::invalid(format!("'{name}' {why}")))?;
        if dtype != A::DTYPE {
            return Err(Error::invalid(format!(
                "'{name}' holds '{dtype}', not '{}'",
                A::DTYPE
            )));
        }
        let dim: D = shape_dim(&shape, &format!("segment '{name}'"))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("could not stat the segment", e))?
            .len() as usize;
        let region = Region::from_file(file, len, Some(name.to_string()), false)?;
        SharedArray::from_region(region, NAMED_OFFSET, dim)
    }

    /// The segment's name, for arrays made by [`create_named`](Self::create_named) or
    /// [`open_named`](Self::open_named).
    ///
    /// ```
    /// use ndarray::Ix1;
    /// let a = shmpar::SharedArray::<u8, Ix1>::create_named(Some("shmpar-doc-name"), 4)?;
    /// assert_eq!(a.name(), Some("shmpar-doc-name"));
    /// # Ok::<(), shmpar::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region().name()
    }
}

/// Removes named segments left behind by creators that died before dropping them (SIGKILL,
/// a crash): every segment in `/dev/shm` with shmpar's header whose owner process is gone.
/// Returns how many were removed.
///
/// ```
/// let removed = shmpar::cleanup_stale()?;
/// # let _ = removed;
/// # Ok::<(), shmpar::Error>(())
/// ```
pub fn cleanup_stale() -> Result<usize> {
    let dir = match std::fs::read_dir("/dev/shm") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("could not list /dev/shm", e)),
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // Anyone may put anything in /dev/shm: a FIFO would block a plain open for ever, and a
        // link could lead anywhere. So: no blocking, no following, regular files only.
        let mut header = [0u8; 96];
        let ok = OpenOptions::new()
            .read(true)
            .custom_flags(sys::O_NONBLOCK | sys::O_NOFOLLOW)
            .open(entry.path())
            .is_ok_and(|mut f| {
                f.metadata().is_ok_and(|m| m.is_file()) && f.read_exact(&mut header).is_ok()
            });
        if !ok || &header[..8] != NAMED_MAGIC {
            continue;
        }
        let owner = u64::from_le_bytes(header[88..96].try_into().unwrap_or_default()) as i32;
        if !sys::process_alive(owner) && sys::shm_unlink(&name).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Parses a named segment's header: its dtype and shape. Any bytes give those or a reason,
/// never a panic.
fn parse_named_header(
    header: &[u8; NAMED_OFFSET],
) -> std::result::Result<(String, Vec<usize>), String> {
    if &header[..8] != NAMED_MAGIC {
        return Err("is not a segment made by shmpar".into());
    }
    let dtype = String::from_utf8_lossy(&header[8..16])
        .trim_end_matches('\0')
        .to_string();
    let word = |i: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(bytes)
    };
    let ndim = word(16);
    if ndim > 8 {
        return Err("has a corrupt header".into());
    }
    let shape = (0..ndim as usize)
        .map(|i| usize::try_from(word(24 + 8 * i)).map_err(|_| "has a corrupt header".to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_give_an_npy_header_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = npy_header_end(&bytes);
            let _ = parse_npy_header(&bytes);
        }

        #[test]
        fn any_bytes_after_the_magic_give_a_header_or_a_reason(
            version in 0u8..5,
            len in any::<u16>(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend([version, 0]);
            bytes.extend(len.to_le_bytes());
            bytes.extend(0u16.to_le_bytes());
            bytes.extend(body);
            let _ = parse_npy_header(&bytes);
        }

        #[test]
        fn a_mangled_dict_gives_a_header_or_a_reason(
            shape in proptest::collection::vec(0usize..1000, 0..4),
            cut in 0usize..120,
            junk in "[ -~]{0,12}",
        ) {
            let good = npy_header_bytes::<f64>(&shape).unwrap();
            let mut bytes = good.clone();
            let at = 10 + cut.min(bytes.len() - 10);
            bytes.splice(at..at, junk.bytes());
            let _ = parse_npy_header(&bytes);
            // Unchanged, it reads back exactly.
            let h = parse_npy_header(&good).unwrap();
            prop_assert_eq!(h.shape, shape);
            prop_assert_eq!(h.descr, "<f8");
            prop_assert_eq!(h.data_offset, good.len());
        }

        #[test]
        fn any_bytes_give_a_named_header_or_a_reason(
            mut bytes in proptest::collection::vec(any::<u8>(), NAMED_OFFSET),
            magic in any::<bool>(),
            ndim in 0u64..12,
        ) {
            if magic {
                bytes[..8].copy_from_slice(NAMED_MAGIC);
                bytes[16..24].copy_from_slice(&ndim.to_le_bytes());
            }
            let header: [u8; NAMED_OFFSET] = bytes.try_into().unwrap();
            let _ = parse_named_header(&header);
        }
    }

    #[test]
    fn a_header_longer_than_its_file_is_an_error_not_an_allocation() {
        // Version 2 declares a 4 GiB header in a 12-byte file.
        let mut bytes = NPY_MAGIC.to_vec();
        bytes.extend([2, 0]);
        bytes.extend(u32::MAX.to_le_bytes());
        assert_eq!(npy_header_end(&bytes), Ok(12 + u32::MAX as usize));
        assert!(parse_npy_header(&bytes).is_err());
    }

    #[test]
    fn headers_in_the_forms_numpy_writes_are_read() {
        let forms = [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }",
            "{'descr':'<f8','fortran_order':False,'shape':(3,4)}",
            "{'shape': (3, 4), 'fortran_order': False, 'descr': '<f8'}",
            "{ 'descr' : '<f8' , 'fortran_order' : False , 'shape' : ( 3 , 4 ) }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3L, 4L), }",
        ];
        for text in forms {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend([1, 0]);
            bytes.extend((text.len() as u16 + 1).to_le_bytes());
            bytes.extend(text.bytes());
            bytes.push(b'\n');
            let h = parse_npy_header(&bytes).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (h.descr.as_str(), h.shape.as_slice()),
                ("<f8", &[3, 4][..]),
                "{text}"
            );
            assert!(!h.fortran_order);
        }
    }

    #[test]
    fn our_npy_header_is_what_numpy_writes() {
        let h = npy_header_bytes::<f64>(&[3, 4]).unwrap();
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)"));
        assert!(text.ends_with('\n'));
        let one = npy_header_bytes::<u8>(&[5]).unwrap();
        assert!(String::from_utf8_lossy(&one).contains("'shape': (5,)"));
        let back = parse_npy_header(&h).unwrap();
        assert_eq!(
            (back.descr.as_str(), back.shape.as_slice()),
            ("<f8", &[3, 4][..])
        );
    }

    #[test]
    fn unusual_forms_numpy_reads_are_read() {
        for text in [
            "{'descr': '<f8',\n 'fortran_order': False,\n 'shape': (3, 4)}\n",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)}",
        ] {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend([1, 0]);
            bytes.extend((text.len() as u16).to_le_bytes());
            bytes.extend(text.bytes());
            let h = parse_npy_header(&bytes).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(h.shape, [3, 4]);
        }
    }

    #[test]
    fn deep_or_huge_headers_are_refused_before_parsing() {
        let header = |version: u8, text: &str| {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend([version, 0]);
            if version == 1 {
                bytes.extend((text.len() as u16).to_le_bytes());
            } else {
                bytes.extend((text.len() as u32).to_le_bytes());
            }
            bytes.extend(text.bytes());
            parse_npy_header(&bytes).unwrap_err()
        };
        // 30,000 nested parentheses would overflow the recursive parser's stack.
        let deep = format!(
            "{{'shape': {}3{}}}\n",
            "(".repeat(30_000),
            ")".repeat(30_000)
        );
        assert!(
            header(1, &deep).contains("deeper than"),
            "{}",
            header(1, &deep)
        );
        // A 1 MB integer literal: refused by length, not parsed.
        let huge = format!("{{'shape': ({},)}}\n", "9".repeat(1 << 20));
        assert!(
            header(2, &huge).contains("past the"),
            "{}",
            header(2, &huge)
        );
        // A syntax error's message stays short.
        let broken = format!("{{'descr': '<f8', 'x': {}\n", "1 ".repeat(5_000));
        assert!(header(1, &broken).len() < 400);
    }

    #[test]
    fn bad_headers_give_reasons() {
        let header = |text: &str| {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend([1, 0]);
            bytes.extend((text.len() as u16 + 1).to_le_bytes());
            bytes.extend(text.bytes());
            bytes.push(b'\n');
            parse_npy_header(&bytes).unwrap_err()
        };
        for (text, says) in [
            ("{'fortran_order': False, 'shape': (3,)}", "descr"),
            ("{'descr': '<f8', 'shape': (3,)}", "fortran_order"),
            (
                "{'descr': '<f8', 'fortran_order': 1, 'shape': (3,)}",
                "fortran_order",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (-3,)}",
                "shape",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}",
                "x",
            ),
            ("[1, 2]", "dict"),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (3,)",
                "syntax",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False}",
                "missing key: shape",
            ),
            (
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (3,)}",
                "structured",
            ),
        ] {
            let why = header(text);
            assert!(why.contains(says), "{text}: {why}");
        }
    }
}
