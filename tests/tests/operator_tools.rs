//! What operators point at a node: gRPC server reflection (what grpcurl
//! uses to list and call the services without the .proto file).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use prost::Message as _;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use trireme_tests::Cluster;

const READY: Duration = Duration::from_secs(20);

/// Sends one reflection request and returns its answer.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> Result<MessageResponse> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(one_request(request))
        .await?
        .into_inner();
    let answer = answers
        .message()
        .await?
        .context("the reflection stream ended without an answer")?;
    answer
        .message_response
        .context("a reflection answer without a message")
}

fn one_request(
    request: ServerReflectionRequest,
) -> impl futures::Stream<Item = ServerReflectionRequest> {
    futures::stream::iter([request])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_services() -> Result<()> {
    let cluster = Cluster::start(1, &[])?;
    cluster.wait_leader(&[1], READY).await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[0].addr))?
            .connect()
            .await?;
    let mut client = ServerReflectionClient::new(channel);

    let MessageResponse::ListServicesResponse(list) =
        ask(&mut client, MessageRequest::ListServices(String::new())).await?
    else {
        bail!("ListServices answered with something else");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "trireme.v1.Cluster",
        "trireme.v1.Kv",
        "trireme.v1.Raft",
    ] {
        ensure!(
            names.iter().any(|n| n == expected),
            "{expected} is not listed: {names:?}"
        );
    }

    // grpcurl describes a service from the file that defines it: the Kv
    // service with its methods and their message types.
    let MessageResponse::FileDescriptorResponse(files) = ask(
        &mut client,
        MessageRequest::FileContainingSymbol("trireme.v1.Kv".into()),
    )
    .await?
    else {
        bail!("FileContainingSymbol answered with something else");
    };
    let files = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    let file = files
        .iter()
        .find(|f| f.package() == "trireme.v1")
        .context("no trireme.v1 file in the answer")?;
    let kv = file
        .service
        .iter()
        .find(|s| s.name() == "Kv")
        .context("the file lacks service Kv")?;
    let put = kv
        .method
        .iter()
        .find(|m| m.name() == "Put")
        .context("Kv lacks Put")?;
    ensure!(
        put.input_type() == ".trireme.v1.PutRequest",
        "Put takes {}",
        put.input_type()
    );

    // An unknown symbol is an error answer, not a hang or a crash: in the
    // stream (an error response) or as the stream's status, both NOT_FOUND.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "no.such.Service".into(),
        )),
    };
    let outcome = match client.server_reflection_info(one_request(request)).await {
        Err(status) => Err(status),
        Ok(answers) => answers
            .into_inner()
            .message()
            .await
            .map(|m| m.and_then(|m| m.message_response)),
    };
    match outcome {
        Ok(Some(MessageResponse::ErrorResponse(e))) => {
            ensure!(e.error_code == tonic::Code::NotFound as i32, "{e:?}")
        }
        Err(status) => ensure!(
            status.code() == tonic::Code::NotFound && status.message().contains("no.such.Service"),
            "an unknown symbol answered {status:?}"
        ),
        other => bail!("an unknown symbol answered {other:?}"),
    }
    Ok(())
}
