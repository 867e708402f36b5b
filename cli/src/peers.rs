//! The Python peer scripts in cli/peers/ (each writes one JSON object per line, read back with
//! serde_json by the command that runs it).

use std::path::PathBuf;

/// The path of a peer script (next to the crate's manifest, as built).
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}
