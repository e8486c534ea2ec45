//! Compiles `orchestrator.proto` and `raft.proto` with the vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; the variable only steers prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // The operator API's messages serialize to JSON: `orchctl -o json` and the HTTP API
    // print exactly what gRPC answers.
    tonic_prost_build::configure()
        .type_attribute(".orchestrator.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".orchestrator.v1.WatchEvent.event", "#[serde(rename_all = \"snake_case\")]")
        .compile_protos(&["orchestrator.proto", "raft.proto"], &["."])?;
    println!("cargo:rerun-if-changed=orchestrator.proto");
    println!("cargo:rerun-if-changed=raft.proto");
    Ok(())
}
