//! Messages from the parent to one worker over its socket (fixed-size datagrams).

/// A message to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mail {
    /// Map the attached descriptor (`len` bytes) as region `id` (an array's: `fingerprint` 0),
    /// or keep it for the handles of the shared object of type `fingerprint` that lives there.
    Map { id: u64, len: u64, fingerprint: u64 },
    /// Unmap your own mapping of region `id`.
    ForgetMapped { id: u64 },
    /// Unmap the mapping you inherited at fork.
    ForgetInherited { addr: u64, len: u64 },
    /// Log through the attached descriptor (`logging::LogSetup` as three words).
    Log { setup: [u64; 3] },
}

impl Mail {
    pub(crate) const SIZE: usize = 32;

    pub(crate) fn encode(self) -> [u8; Self::SIZE] {
        let words: [u64; 4] = match self {
            Mail::Map {
                id,
                len,
                fingerprint,
            } => [1, id, fingerprint, len],
            Mail::ForgetMapped { id } => [2, id, 0, 0],
            Mail::ForgetInherited { addr, len } => [3, 0, addr, len],
            Mail::Log { setup: [a, b, c] } => [4, a, b, c],
        };
        bytemuck::cast(words)
    }

    pub(crate) fn decode(bytes: &[u8; Self::SIZE]) -> Option<Mail> {
        let [kind, id, addr, len]: [u64; 4] = bytemuck::cast(*bytes);
        match kind {
            1 => Some(Mail::Map {
                id,
                len,
                fingerprint: addr,
            }),
            2 => Some(Mail::ForgetMapped { id }),
            3 => Some(Mail::ForgetInherited { addr, len }),
            4 => Some(Mail::Log {
                setup: [id, addr, len],
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mail;

    #[test]
    fn round_trip() {
        for m in [
            Mail::Map {
                id: 7,
                len: 4096,
                fingerprint: 99,
            },
            Mail::ForgetMapped { id: 9 },
            Mail::ForgetInherited {
                addr: 0x7f00_0000_0000,
                len: 8192,
            },
            Mail::Log { setup: [3, 1, 0] },
        ] {
            assert_eq!(Mail::decode(&m.encode()), Some(m));
        }
        assert_eq!(Mail::decode(&[0; Mail::SIZE]), None);
    }
}
