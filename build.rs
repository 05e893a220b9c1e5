//! Generates include/remote_directory.h from src/ffi.rs and gives the shared library its
//! SONAME. CI fails when the committed header differs from what this writes.

fn main() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    // Programs linked against libremote_directory.so record this name; bump the major
    // version here when the C ABI changes incompatibly.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_default();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libremote_directory.so.{major}");

    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(format!("{crate_dir}/include/remote_directory.h"));
        }
        // A half-edited src/ffi.rs should report rustc's error, not cbindgen's.
        Err(e) => println!("cargo:warning=header not regenerated: {e}"),
    }
}
