//! berth's wire types: the code generated from `proto/berth/v1/` and nothing else.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("berth.v1");
}

/// Encoded `FileDescriptorSet` of every berth proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_descriptor");

/// [`FILE_DESCRIPTOR_SET`] keeping only the services named in `served`
/// (full names, e.g. `berth.v1.NetworkService`), every message and enum
/// kept: what a server serving just those hands to gRPC reflection, so it
/// neither lists nor describes the others (berth-api does not serve
/// `AgentService`, which shares a file with `RegistryService`).
pub fn descriptors_serving(served: &[&str]) -> prost_types::FileDescriptorSet {
    let mut set = <prost_types::FileDescriptorSet as prost::Message>::decode(FILE_DESCRIPTOR_SET)
        .expect("the built-in descriptor set decodes");
    for file in &mut set.file {
        let package = file.package().to_string();
        file.service
            .retain(|s| served.contains(&format!("{package}.{}", s.name()).as_str()));
    }
    set
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptors_serving_keeps_only_the_named_services() {
        let set = super::descriptors_serving(&["berth.v1.RegistryService", "berth.v1.NetworkService"]);
        let services: Vec<&str> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .map(|s| s.name())
            .collect();
        assert_eq!(services, ["NetworkService", "RegistryService"]);
        let messages = set.file.iter().flat_map(|f| &f.message_type).count();
        let all =
            <prost_types::FileDescriptorSet as prost::Message>::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        assert_eq!(messages, all.file.iter().flat_map(|f| &f.message_type).count());
    }
}
