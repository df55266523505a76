//! Compiles `proto/triad.proto` with the vendored `protoc`, so a fresh machine needs no
//! protobuf compiler installed. The path is passed to prost-build directly; `PROTOC` is never
//! exported, because the `raft` crate's own build would pick it up and fail.

fn main() {
    println!("cargo:rerun-if-changed=proto/triad.proto");
    let protoc = match protoc_bin_vendored::protoc_bin_path() {
        Ok(path) => path,
        Err(err) => {
            eprintln!("triad-proto: no vendored protoc for this platform: {err}");
            std::process::exit(1);
        }
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    if let Err(err) = config.compile_protos(&["proto/triad.proto"], &["proto"]) {
        eprintln!("triad-proto: compiling proto/triad.proto failed: {err}");
        std::process::exit(1);
    }
}
