//! A static site served by nginx, tested from a crate that is not part of the chaos workspace.
//! The system is declared in this file; `fn system()` is the default of every test below.
use chaos_runtime::{ChaosRun, HttpWorkload, Probe, Service, System, chaos_test};
use testcontainers::ImageExt;

const NGINX_CONF: &str = r#"
worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    server {
        listen 80;
        root /srv/site;
        location / { try_files $uri /index.html; }
    }
}
"#;

fn system() -> System {
    System::new("site")
        .service(
            Service::new("web", |w| {
                // No registry here: the framework's local Debian image has nginx.
                w.base_image()
                    .with_copy_to("/etc/site/nginx.conf", NGINX_CONF.as_bytes().to_vec())
                    .with_copy_to("/srv/site/index.html", b"<h1>hello</h1>".to_vec())
                    .with_cmd(["nginx", "-c", "/etc/site/nginx.conf", "-g", "daemon off;"])
            })
            .port(80)
            .ready(Probe::http(80, "/")),
        )
        .workload("browse", HttpWorkload::get("web", 80, "/page/{seq}"))
}

// nginx restarts in well under a second; the budget leaves room for a loaded machine.
#[chaos_test(fault = "kill", target = "web", duration = "1s", recover_within = "5s")]
async fn the_site_comes_back_after_nginx_is_killed(run: ChaosRun) {
    let fault = run.metrics().phase("fault").expect("a fault phase");
    assert!(fault.failed > 0, "{}", run.timeline().render_text());
    assert!(
        run.events("container_die")
            .iter()
            .any(|e| e.container.as_deref() == Some("web")),
        "{}",
        run.timeline().render_text()
    );
}

// The fault proxy goes in front of nginx's port: every page is slower by the latency while it
// lasts, and none fails. From crates.io this crate has no `chaos-proxy` binary of its own; the
// test binary plays it (and the reaper, and the host agent when one is needed).
#[chaos_test(
    fault = "latency",
    target = "web",
    latency = "150ms",
    duration = "2s",
    recover_within = "5s"
)]
async fn pages_slow_down_by_the_injected_latency(run: ChaosRun) {
    let m = run.metrics();
    let (base, fault) = (
        m.phase("baseline").expect("a baseline phase"),
        m.phase("fault").expect("a fault phase"),
    );
    let text = run.timeline().render_text();
    assert!(
        fault.p50_ms >= base.p50_ms + 140.0,
        "fault p50 {:.1} ms against baseline p50 {:.1} ms\n{text}",
        fault.p50_ms,
        base.p50_ms
    );
    assert_eq!(fault.failed, 0, "{text}");
}
