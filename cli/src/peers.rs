//! The Python peer scripts in cli/peers/, and reading their JSON lines.

use std::path::PathBuf;

/// The path of a peer script (next to the crate's manifest, as built).
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// A field of a flat JSON object line, as text (quotes removed).
pub(crate) fn field(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":");
    let at = line.find(&key)? + key.len();
    let rest = line[at..].trim_start();
    if let Some(stripped) = rest.strip_prefix('"') {
        return stripped.find('"').map(|end| stripped[..end].to_string());
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_fields() {
        let l = r#"{"peer": "numpy", "variant": "numpy Pool(2)", "workers": 2, "samples_per_s": 5.3e8}"#;
        assert_eq!(field(l, "variant").as_deref(), Some("numpy Pool(2)"));
        assert_eq!(field(l, "workers").as_deref(), Some("2"));
        assert_eq!(field(l, "samples_per_s").as_deref(), Some("5.3e8"));
        assert_eq!(field(l, "missing"), None);
    }
}
