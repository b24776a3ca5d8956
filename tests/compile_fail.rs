//! The attributes' compile errors, pinned on the toolchain the project builds with
//! (`rust-version` in Cargo.toml). Regenerate with `TRYBUILD=overwrite cargo test --test
//! compile_fail` after a toolchain change, and read the diff.
#[test]
fn attribute_errors_point_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
