//! The HTTP API described where its users look: `/openapi.json` is the document generated from
//! the proto's rules, and `/docs` (Swagger UI, served by loms itself) lists every operation and
//! calls the API, in a real browser (headless Chromium).

use std::time::Duration;

use api::loms::StocksInfoRequest;
use fantoccini::Locator;
use serde_json::Value;
use testkit::app::TestApp;
use testkit::browser::Browser;

const SKU: i64 = 1076963;

#[tokio::test]
async fn openapi_document_is_served() {
    let app = TestApp::spawn().await;
    let reply = reqwest::get(app.url("/openapi.json")).await.unwrap();
    assert_eq!(reply.status(), 200);
    let served: Value = reply.json().await.unwrap();
    assert_eq!(
        served,
        serde_json::from_str::<Value>(api::OPENAPI_JSON).unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn docs_page_lists_the_operations_and_a_call_from_it_succeeds() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    let page = &browser.client;
    page.goto(&app.url("/docs")).await.expect("open /docs");

    // Every route, as Swagger UI lists it once it has loaded the document.
    page.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(".opblock"))
        .await
        .expect("the operations are listed");
    let mut listed = Vec::new();
    for block in page.find_all(Locator::Css(".opblock")).await.unwrap() {
        let method = block
            .find(Locator::Css(".opblock-summary-method"))
            .await
            .unwrap();
        let path = block
            .find(Locator::Css(".opblock-summary-path"))
            .await
            .unwrap();
        listed.push(format!(
            "{} {}",
            method.text().await.unwrap(),
            path.text().await.unwrap()
        ));
    }
    listed.sort();
    let mut routes: Vec<String> = api::HTTP_ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    routes.sort();
    assert_eq!(listed, routes);

    // StocksInfo tried out from the page: open it, "Try it out", a sku, "Execute".
    let op = "#operations-Loms-Loms_StocksInfo";
    let click = |css: String| async move {
        page.wait()
            .for_element(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    };
    click(format!("{op} .opblock-summary-control")).await;
    click(format!("{op} .try-out__btn")).await;
    let sku = format!("{op} tr[data-param-name='sku'] input");
    let sku = page.wait().for_element(Locator::Css(&sku)).await.unwrap();
    sku.clear().await.unwrap(); // the example the document gives
    sku.send_keys(&SKU.to_string()).await.unwrap();
    click(format!("{op} .execute")).await;

    let status = format!("{op} .live-responses-table tr.response .response-col_status");
    let status = page
        .wait()
        .for_element(Locator::Css(&status))
        .await
        .unwrap();
    let status = status.text().await.unwrap();
    let body = format!("{op} .live-responses-table tr.response .response-col_description pre");
    let body = page
        .find(Locator::Css(&body))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let called = format!("{op} .request-url pre");
    let called = page
        .find(Locator::Css(&called))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status.trim(), "200", "{called}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    let count = app
        .client()
        .await
        .stocks_info(StocksInfoRequest { sku: SKU })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(body["count"], count, "the page shows loms's answer");

    browser.client.clone().close().await.unwrap();
    app.stop().await;
}
