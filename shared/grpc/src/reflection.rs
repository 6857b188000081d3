//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`), so that
//! `grpcurl` and other reflection clients can list a component's services,
//! describe them and call them without the `.proto` files.
//!
//! tonic-reflection's own server answers from a task it spawns on tokio,
//! and a component has no tokio runtime; this one answers each request of
//! the stream as it arrives (a map over the stream), with
//! tonic-reflection's generated messages. A failed lookup is an
//! `ErrorResponse` in the stream, as the protocol says, not the end of the
//! call.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use tonic::Status;

/// What reflection can tell: the services and, for every file and symbol,
/// the encoded file that defines it.
#[derive(Debug, Default)]
pub struct Registry {
    services: BTreeSet<String>,
    files: HashMap<String, Vec<u8>>,
    symbols: HashMap<String, String>,
}

impl Registry {
    /// The registry of the encoded `FileDescriptorSet`s in `sets`, with the
    /// reflection services' own.
    pub fn new(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let own = [
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut registry = Self::default();
        for set in sets.iter().chain(own.iter()) {
            for file in FileDescriptorSet::decode(*set)?.file {
                registry.add(file);
            }
        }
        Ok(registry)
    }

    /// The services' full names.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(String::as_str)
    }

    fn add(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_string();
        let prefix = match file.package() {
            "" => String::new(),
            package => format!("{package}."),
        };
        for service in &file.service {
            let full = format!("{prefix}{}", service.name());
            for method in &service.method {
                self.symbols
                    .insert(format!("{full}.{}", method.name()), name.clone());
            }
            self.symbols.insert(full.clone(), name.clone());
            self.services.insert(full);
        }
        for message in &file.message_type {
            self.add_message(&prefix, message, &name);
        }
        for enumeration in &file.enum_type {
            self.symbols
                .insert(format!("{prefix}{}", enumeration.name()), name.clone());
        }
        self.files.insert(name, file.encode_to_vec());
    }

    fn add_message(&mut self, prefix: &str, message: &DescriptorProto, file: &str) {
        let full = format!("{prefix}{}", message.name());
        let inner = format!("{full}.");
        for nested in &message.nested_type {
            self.add_message(&inner, nested, file);
        }
        for enumeration in &message.enum_type {
            self.symbols
                .insert(format!("{inner}{}", enumeration.name()), file.to_string());
        }
        self.symbols.insert(full, file.to_string());
    }

    fn answer(&self, ask: Ask<'_>) -> Result<Answer, Status> {
        match ask {
            Ask::File(name) => self
                .files
                .get(name)
                .map(|file| Answer::Files(vec![file.clone()]))
                .ok_or_else(|| Status::not_found(format!("no file `{name}`"))),
            Ask::Symbol(symbol) => self
                .symbols
                .get(symbol)
                .map(|file| Answer::Files(vec![self.files[file].clone()]))
                .ok_or_else(|| Status::not_found(format!("no symbol `{symbol}`"))),
            Ask::Extension => Err(Status::not_found("no extensions are defined")),
            // None are defined; some clients (grpcurl) ask anyway and expect
            // an answer, not an error.
            Ask::ExtensionNumbers(base) => Ok(Answer::ExtensionNumbers(base.to_string())),
            Ask::Services => Ok(Answer::Services(self.services.iter().cloned().collect())),
        }
    }
}

/// One request of a reflection stream, whichever version asked it.
enum Ask<'a> {
    File(&'a str),
    Symbol(&'a str),
    Extension,
    ExtensionNumbers(&'a str),
    Services,
}

/// Its answer.
enum Answer {
    Files(Vec<Vec<u8>>),
    Services(Vec<String>),
    ExtensionNumbers(String),
}

/// The two versions differ only in their package: one service each, from
/// one definition.
macro_rules! reflection_service {
    ($version:ident, $doc:literal) => {
        #[doc = $doc]
        pub mod $version {
            use std::pin::Pin;
            use std::sync::Arc;

            use futures::{Stream, StreamExt};
            use tonic::{Request, Response, Status, Streaming};
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::server_reflection_server::{
                ServerReflection, ServerReflectionServer,
            };
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse,
                ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse,
                ServiceResponse,
            };

            use super::{Answer, Ask, Registry};

            /// The reflection service over `registry`, for tonic to serve.
            pub fn server(registry: Arc<Registry>) -> ServerReflectionServer<Reflection> {
                ServerReflectionServer::new(Reflection(registry))
            }

            /// Answers reflection requests from a [`Registry`].
            #[derive(Debug, Clone)]
            pub struct Reflection(Arc<Registry>);

            type Answers =
                Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

            #[tonic::async_trait]
            impl ServerReflection for Reflection {
                type ServerReflectionInfoStream = Answers;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Answers>, Status> {
                    let registry = self.0.clone();
                    let answers = request.into_inner().map(move |asked| {
                        let asked = asked?;
                        let answer = match &asked.message_request {
                            None => Err(Status::invalid_argument("the request asks nothing")),
                            Some(request) => registry.answer(match request {
                                MessageRequest::FileByFilename(name) => Ask::File(name),
                                MessageRequest::FileContainingSymbol(symbol) => Ask::Symbol(symbol),
                                MessageRequest::FileContainingExtension(_) => Ask::Extension,
                                MessageRequest::AllExtensionNumbersOfType(base) => {
                                    Ask::ExtensionNumbers(base)
                                }
                                MessageRequest::ListServices(_) => Ask::Services,
                            }),
                        };
                        let message = match answer {
                            Ok(Answer::Files(files)) => {
                                MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                                    file_descriptor_proto: files,
                                })
                            }
                            Ok(Answer::Services(names)) => {
                                MessageResponse::ListServicesResponse(ListServiceResponse {
                                    service: names
                                        .into_iter()
                                        .map(|name| ServiceResponse { name })
                                        .collect(),
                                })
                            }
                            Ok(Answer::ExtensionNumbers(base_type_name)) => {
                                MessageResponse::AllExtensionNumbersResponse(
                                    ExtensionNumberResponse {
                                        base_type_name,
                                        extension_number: Vec::new(),
                                    },
                                )
                            }
                            Err(status) => MessageResponse::ErrorResponse(ErrorResponse {
                                error_code: status.code() as i32,
                                error_message: status.message().to_string(),
                            }),
                        };
                        Ok(ServerReflectionResponse {
                            valid_host: asked.host.clone(),
                            original_request: Some(asked),
                            message_response: Some(message),
                        })
                    });
                    Ok(Response::new(Box::pin(answers)))
                }
            }
        }
    };
}

reflection_service!(v1, "`grpc.reflection.v1.ServerReflection`.");
reflection_service!(
    v1alpha,
    "`grpc.reflection.v1alpha.ServerReflection`, which older clients ask."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_symbol_of_the_inventory_contract() {
        let registry = Registry::new(&[crate::inventory::FILE_DESCRIPTOR_SET]).unwrap();
        assert_eq!(
            registry.services().collect::<Vec<_>>(),
            [
                "bitvelocity.inventory.v1.Inventory",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
        );
        for symbol in [
            "bitvelocity.inventory.v1.Inventory",
            "bitvelocity.inventory.v1.Inventory.Reserve",
            "bitvelocity.inventory.v1.Reservation",
            "bitvelocity.inventory.v1.ReservationStatus",
        ] {
            let Ok(Answer::Files(files)) = registry.answer(Ask::Symbol(symbol)) else {
                panic!("{symbol} not found");
            };
            let file = FileDescriptorProto::decode(&files[0][..]).unwrap();
            assert_eq!(file.name(), "inventory.proto", "{symbol}");
        }
        let missing = registry.answer(Ask::Symbol("bitvelocity.inventory.v1.Nope"));
        assert_eq!(missing.err().unwrap().code(), tonic::Code::NotFound);
        assert!(matches!(
            registry.answer(Ask::File("inventory.proto")),
            Ok(Answer::Files(_))
        ));
    }
}
