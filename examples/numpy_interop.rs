//! Share an array with numpy, no copies: Rust creates a named segment, Python attaches, reads
//! it and writes back; then both read a `.npy` file the other wrote.
//!
//! `cargo run --release --example numpy_interop` (runs examples/numpy_interop.py with python3)
use std::process::Command;

use ndarray::Ix2;
use shmpar::SharedArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = SharedArray::<f64, Ix2>::create_named(None, (3, 4))?;
    a.view_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as f64);
    let name = a.name().unwrap_or_default().to_string();
    println!("Rust: created segment '{name}', sum = {}", a.view().sum());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/numpy_interop.py");
    let status = Command::new("python3")
        .args([script, &name, "3", "4"])
        .status()?;
    if !status.success() {
        return Err("the Python half failed (is numpy installed?)".into());
    }
    println!(
        "Rust: after Python, a[0, 0] = {} and sum = {}",
        a.view()[[0, 0]],
        a.view().sum()
    );
    Ok(()) // dropping `a` removes the segment
}
