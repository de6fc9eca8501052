//! `make schema-snapshot`: records the schemas as released, on purpose (for a release). The
//! schema guard then measures every later change against what this writes.

use build_support::schema::{self, RELEASED};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for released in RELEASED {
        let pool = schema::compile(&root.join(released.root), &[released.file])?;
        let path = root.join(released.snapshot);
        std::fs::write(&path, schema::to_snapshot(&pool)?)?;
        println!("{} -> {}", released.file, path.display());
    }
    Ok(())
}
