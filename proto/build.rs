//! Generates the Rust code for `proto/berth/v1/*.proto` and the descriptor set
//! the servers hand to gRPC reflection.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "berth/v1/types.proto",
        "berth/v1/api.proto",
        "berth/v1/agent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("berth_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    Ok(())
}
