//! Build script: hands the target triple to the crate, so `wssed --version` can say which
//! target a binary was built for (cargo gives `TARGET` to build scripts only).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| String::from("unknown"));
    println!("cargo:rustc-env=WSSED_BUILD_TARGET={target}");
    // Nothing else here depends on the sources: run again only when this file changes.
    println!("cargo:rerun-if-changed=build.rs");
}
