//! Release builds for x86_64 Linux lay out Axle's code in the order of `text-order.txt`,
//! hottest first: what a server and an agent run when left alone, then what serving adds, then
//! the code only their start runs (see `tools/text-order/README.md`). That keeps the mapped
//! code of an idle server or agent small.
//!
//! The order is a hint to LLD, the default linker of `x86_64-unknown-linux-gnu`: symbols it
//! names that no longer exist are skipped, new code goes after the listed code. A build that
//! chooses its own linker gets the default layout, since GNU ld has no such option.

fn main() {
    println!("cargo:rerun-if-changed=text-order.txt");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let own_linker = std::env::var_os("RUSTC_LINKER").is_some()
        || std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|flags| flags.contains("link"));
    if target != "x86_64-unknown-linux-gnu" || profile != "release" || own_linker {
        return;
    }
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("text-order.txt");
    if !order.exists() {
        return;
    }
    println!("cargo:rustc-link-arg-bin=axle=-Wl,--symbol-ordering-file={}", order.display());
    println!("cargo:rustc-link-arg-bin=axle=-Wl,--no-warn-symbol-ordering");
}
