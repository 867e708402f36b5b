//! postcard output for task arguments and outcomes, tuned for the many tiny values of a `map`:
//! runs of up to `SHORT` bytes (a tag, a varint) are copied byte by byte. postcard's own
//! flavors call the C library's `memmove` for each of them, which measured a third of a
//! worker's time on trivial tasks (`x + 1` over `u64`).

use postcard::ser_flavors::Flavor;

/// Runs of at most this many bytes are copied inline.
const SHORT: usize = 16;

/// Writes into a byte slice; its output is the number of bytes written.
pub(super) struct SliceOut<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> SliceOut<'a> {
    pub(super) fn new(buf: &'a mut [u8]) -> Self {
        SliceOut { buf, at: 0 }
    }
}

impl Flavor for SliceOut<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self
            .buf
            .get_mut(self.at)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.at += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= SHORT {
            // One checked store per byte: not a loop the compiler turns back into `memmove`.
            return data.iter().try_for_each(|&b| self.try_push(b));
        }
        let end = self.at + data.len();
        let dst = (self.buf)
            .get_mut(self.at..end)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        dst.copy_from_slice(data);
        self.at = end;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.at)
    }
}

/// Appends to a `Vec`.
pub(super) struct VecOut<'a>(pub(super) &'a mut Vec<u8>);

impl Flavor for VecOut<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= SHORT {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{SliceOut, VecOut};

    #[test]
    fn both_write_what_postcard_writes() {
        let value = (
            7u8,
            300u64,
            "a string longer than sixteen bytes",
            vec![1u32, 2, 70_000],
        );
        let expected = postcard::to_stdvec(&value).unwrap();
        let mut buf = vec![0u8; 128];
        let n = postcard::serialize_with_flavor(&value, SliceOut::new(&mut buf)).unwrap();
        assert_eq!(&buf[..n], &expected[..]);
        let mut v = vec![9];
        postcard::serialize_with_flavor(&value, VecOut(&mut v)).unwrap();
        assert_eq!((v[0], &v[1..]), (9, &expected[..]));
    }

    #[test]
    fn a_slice_too_short_is_full_whatever_the_run_length() {
        let value = (1u64, "forty bytes of text, well past the short".to_string());
        let expected = postcard::to_stdvec(&value).unwrap();
        for len in 0..expected.len() {
            let mut buf = vec![0u8; len];
            let r = postcard::serialize_with_flavor(&value, SliceOut::new(&mut buf));
            assert_eq!(r, Err(postcard::Error::SerializeBufferFull), "{len} bytes");
        }
    }
}
