//! TLS on the API's listeners (`[tls]`): with a client CA, gRPC and HTTP accept a client whose
//! certificate that CA signed and refuse one without a certificate or with another CA's; without
//! one, any client over TLS is served; plaintext is not.

use std::path::{Path, PathBuf};

use api::loms::StocksInfoRequest;
use loms::config::ApiTls;
use testkit::app::{settings, TestApp};
use testkit::stack::certificates;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const SKU: i64 = 1076963;

struct Authorities {
    ours: PathBuf,
    theirs: PathBuf,
}

fn authorities() -> Authorities {
    let dir = std::env::temp_dir().join(format!("loms-api-tls-{}", testkit::unique()));
    Authorities {
        ours: certificates(&dir.join("ours")),
        theirs: certificates(&dir.join("theirs")),
    }
}

async fn app(ca: &Authorities, mutual: bool) -> TestApp {
    let db = testkit::db::fresh_database().await;
    let mut s = settings(&db, "loms.order-events.unused", false);
    s.tls = Some(ApiTls {
        cert_file: ca.ours.join("server.pem"),
        key_file: ca.ours.join("server.key"),
        client_ca_file: mutual.then(|| ca.ours.join("ca.pem")),
    });
    TestApp::start(s, &db).await
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// StocksInfo over gRPC and TLS, as a client with the certificate of `client` (or none).
async fn grpc_call(app: &TestApp, ca: &Authorities, client: Option<&Path>) -> Result<u32, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca.ours.join("ca.pem"))))
        .domain_name("localhost");
    if let Some(dir) = client {
        tls = tls.identity(Identity::from_pem(
            read(dir.join("client.pem")),
            read(dir.join("client.key")),
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", app.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    api::LomsClient::new(channel)
        .stocks_info(StocksInfoRequest { sku: SKU })
        .await
        .map(|r| r.get_ref().count)
        .map_err(|e| format!("call: {e:?}"))
}

/// GET /stock/info over HTTPS, as a client with the certificate of `client` (or none).
async fn http_call(app: &TestApp, ca: &Authorities, client: Option<&Path>) -> Result<u16, String> {
    let mut builder = reqwest::Client::builder().add_root_certificate(
        reqwest::Certificate::from_pem(&read(ca.ours.join("ca.pem"))).unwrap(),
    );
    if let Some(dir) = client {
        let mut pem = read(dir.join("client.pem"));
        pem.extend(read(dir.join("client.key")));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    let reply = builder
        .build()
        .unwrap()
        .get(format!("https://{}/stock/info?sku={SKU}", app.http))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(reply.status().as_u16())
}

#[tokio::test]
async fn mutual_tls_serves_a_signed_client_and_refuses_the_others() {
    let ca = authorities();
    let app = app(&ca, true).await;
    assert!(grpc_call(&app, &ca, Some(&ca.ours)).await.is_ok());
    assert_eq!(http_call(&app, &ca, Some(&ca.ours)).await, Ok(200));
    for (who, client) in [
        ("no certificate", None),
        ("another CA's", Some(ca.theirs.as_path())),
    ] {
        let grpc = grpc_call(&app, &ca, client).await;
        assert!(grpc.is_err(), "gRPC served a client with {who}: {grpc:?}");
        let http = http_call(&app, &ca, client).await;
        assert!(http.is_err(), "HTTP served a client with {who}: {http:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_any_client_but_not_plaintext() {
    let ca = authorities();
    let app = app(&ca, false).await;
    assert!(grpc_call(&app, &ca, None).await.is_ok());
    assert_eq!(http_call(&app, &ca, None).await, Ok(200));
    let plaintext = reqwest::get(format!("http://{}/stock/info?sku={SKU}", app.http)).await;
    assert!(
        plaintext
            .as_ref()
            .map_or(true, |r| !r.status().is_success()),
        "a plaintext request was served: {plaintext:?}"
    );
    let plaintext_grpc = api::LomsClient::connect(format!("http://{}", app.grpc))
        .await
        .map_err(drop)
        .map(|mut c| async move { c.stocks_info(StocksInfoRequest { sku: SKU }).await });
    if let Ok(call) = plaintext_grpc {
        assert!(call.await.is_err(), "a plaintext gRPC call was served");
    }
    app.stop().await;
}
