//! Every call into the operating system lives here: one file per platform, chosen in one place.
//!
//! Linux is the only implementation. Elsewhere `stub.rs` answers every call with
//! [`std::io::ErrorKind::Unsupported`], which reaches users as
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "stub.rs")]
mod imp;

pub(crate) use imp::*;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    /// It called `_exit(code)`.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// The signal that ended the process, if one did.
    pub(crate) fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled(sig) => Some(sig),
            ExitStatus::Exited(_) => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "was killed by {}", signal_name(*sig)),
        }
    }
}

/// The conventional name of a signal number, for messages.
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}
