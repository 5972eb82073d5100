//! Malformed and oversized traffic over real sessions: a peer sending garbage, an authenticated
//! client sending undecodable or too-large messages, and a frame over the transport's limit. The
//! node answers with errors or drops the offending session, and keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use hodei_actors::wire::{
    ApiErrorKind, ClientReply, ClientRequest, ClientResponse, GATEWAY_GROUP, PROTOCOL_VERSION, Wire,
};
use ractor::rpc::CallResult;
use ractor::{ActorRef, BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

/// The gateway's message as a misbehaving client sees it: same variant name, raw bytes.
#[derive(RactorClusterMessage)]
enum GatewayMsg {
    #[rpc]
    Request(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

async fn raw_call(gw: &ActorRef<GatewayMsg>, bytes: Vec<u8>) -> Option<ClientReply> {
    match gw
        .call(
            |r| GatewayMsg::Request(bytes, r),
            Some(Duration::from_secs(20)),
        )
        .await
    {
        Ok(CallResult::Success(b)) => Some(
            Wire::<ClientReply>::from_bytes(b)
                .0
                .expect("the node answers with a frame"),
        ),
        _ => None,
    }
}

#[test]
fn malformed_and_oversized_messages_are_refused_and_the_node_keeps_serving() {
    let node = TestNode::start(NodeOpts::default());

    // 1. Garbage on a raw TCP connection: the node drops that connection.
    let mut s = std::net::TcpStream::connect(&node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[
        0, 0, 0, 0, 0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8,
    ])
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the node closed the connection");
    assert_eq!(
        exit_code(&node.run(&["submit", "--wait", "--", "true"])),
        0,
        "and still serves"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut me = hodei::cluster::start("e2e-raw", COOKIE).await.unwrap();
        me.connect(&node.addr, Duration::from_secs(10))
            .await
            .unwrap();
        let gw: ActorRef<GatewayMsg> =
            hodei::cluster::find_remote(GATEWAY_GROUP, Duration::from_secs(10))
                .await
                .expect("gateway")
                .into();

        // 2. An undecodable payload on an authenticated session: a Malformed error, not a hang.
        let r = raw_call(&gw, b"this is not a hodei frame".to_vec())
            .await
            .expect("an answer");
        let e = r.unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::Malformed, "{e}");
        let mut bad = Wire::ok(ClientRequest::ListWorkers).into_bytes();
        bad.truncate(bad.len() - 1);
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(
            raw_call(&gw, bad).await.unwrap().unwrap_err().kind,
            ApiErrorKind::Malformed
        );

        // 3. Another protocol version: refused, naming both versions.
        let mut other = Wire::ok(ClientRequest::ListWorkers).into_bytes();
        other[4..8].copy_from_slice(&(PROTOCOL_VERSION + 6).to_le_bytes());
        let e = raw_call(&gw, other).await.unwrap().unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::Version);
        assert!(
            e.message
                .contains(&format!("version {}", PROTOCOL_VERSION + 6)),
            "{e}"
        );

        // 4. Oversized (over the 4 MiB message limit, under the 16 MiB frame limit): refused.
        let e = raw_call(&gw, vec![7u8; 5 << 20])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::TooLarge);
        assert!(e.message.contains("exceeds the limit"), "{e}");

        // The same session still works for well-formed requests.
        let ok = raw_call(&gw, Wire::ok(ClientRequest::ListWorkers).into_bytes())
            .await
            .unwrap();
        assert!(matches!(ok, Ok(ClientResponse::Workers(_))), "{ok:?}");

        // 5. A frame over the transport's 16 MiB limit kills only this session.
        let r = raw_call(&gw, vec![1u8; 17 << 20]).await;
        assert!(r.is_none(), "no answer to an over-limit frame");
    });
    drop(rt);
    // Everyone else is still served.
    assert_eq!(exit_code(&node.run(&["submit", "--wait", "--", "true"])), 0);
    let log = node.log();
    assert!(log.contains("refused a message"), "refusals are logged");
}
