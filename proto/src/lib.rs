//! berth's wire types: the code generated from `proto/berth/v1/` and nothing else.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("berth.v1");
}

impl v1::PortProtocol {
    /// The protocol called `name` (`tcp`, `udp`, any case; empty: TCP).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "" | "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }

    /// `tcp` or `udp` for a wire value (unspecified: `tcp`); the number
    /// itself for a value this version does not know, so that validation
    /// names it.
    pub fn name_of(value: i32) -> String {
        match Self::try_from(value) {
            Ok(Self::Unspecified | Self::Tcp) => "tcp".into(),
            Ok(Self::Udp) => "udp".into(),
            Err(_) => value.to_string(),
        }
    }
}

impl v1::NetworkScope {
    /// `local`, `global`, or empty (unspecified or unknown).
    pub fn name_of(value: i32) -> &'static str {
        match Self::try_from(value) {
            Ok(Self::Local) => "local",
            Ok(Self::Global) => "global",
            _ => "",
        }
    }
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
