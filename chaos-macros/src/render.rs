//! Output: the `#[test]` fn that hands the spec and the body to the runtime.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Visibility;
use syn::spanned::Spanned;

use crate::validate::{Fault, Steady, Test};

/// The expansion of a valid test (see the crate docs for its shape).
pub fn render(test: Test) -> TokenStream {
    let Test {
        mut func,
        test_attrs,
        takes_run,
        faults,
        recover_within_ms,
        observer,
        workload,
        snapshot,
        system,
        steady,
    } = test;
    let name = func.sig.ident.clone();
    let vis = std::mem::replace(&mut func.vis, Visibility::Inherited);
    let faults = faults.iter().map(fault);
    let recover_within_ms = Literal::u64_unsuffixed(recover_within_ms);
    let observer = option(observer.map(|o| quote!(#o)));
    let workload = option(workload.map(|w| quote!(#w)));
    // Without `system = ..`, the name `system` as the test's module sees it: a `fn system()` of
    // the file or a `use my_app::system;` sets the default for every test of the file.
    let system = match system {
        Some(path) => quote_spanned!(path.span()=> #path),
        None => quote!(system),
    };
    let Steady {
        ok_ratio,
        p99_ms,
        window_ms,
    } = steady;
    let ok_ratio = option(ok_ratio.map(|r| {
        let r = Literal::f64_unsuffixed(r.parse().expect("validated"));
        quote!(#r)
    }));
    let p99_ms = option(p99_ms.map(|ms| {
        let ms = Literal::u64_unsuffixed(ms);
        quote!(#ms)
    }));
    let window_ms = option(window_ms.map(|ms| {
        let ms = Literal::u64_unsuffixed(ms);
        quote!(#ms)
    }));
    // `mixed_site`: the closure's parameter cannot shadow a test fn that is itself named `run`.
    let body = if takes_run {
        let run = Ident::new("run", Span::mixed_site());
        quote!(|#run: ::chaos_runtime::ChaosRun| ::std::boxed::Box::pin(#name(#run)))
    } else {
        let run = Ident::new("_run", Span::mixed_site());
        quote!(|#run: ::chaos_runtime::ChaosRun| ::std::boxed::Box::pin(#name()))
    };
    quote! {
        #(#test_attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() {
            #func
            static __CHAOS_SPEC: ::chaos_runtime::__private::Spec = ::chaos_runtime::__private::Spec {
                name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                fn_name: ::core::stringify!(#name),
                file: ::core::file!(),
                manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                faults: &[#(#faults),*],
                recover_within_ms: #recover_within_ms,
                observer: #observer,
                workload: #workload,
                snapshot: #snapshot,
                system: #system,
                steady: ::chaos_runtime::__private::SteadySpec {
                    ok_ratio: #ok_ratio,
                    p99_ms: #p99_ms,
                    window_ms: #window_ms,
                },
            };
            ::chaos_runtime::__private::run(&__CHAOS_SPEC, ::std::boxed::Box::new(#body));
        }
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::std::option::Option::Some(#v)),
        None => quote!(::std::option::Option::None),
    }
}

fn fault(fault: &Fault) -> TokenStream {
    let Fault {
        kind,
        target,
        after_ms,
        duration_ms,
        params,
    } = fault;
    let after_ms = Literal::u64_unsuffixed(*after_ms);
    let duration_ms = Literal::u64_unsuffixed(*duration_ms);
    let params = params.iter().map(|(key, value)| quote!((#key, #value)));
    quote! {
        ::chaos_runtime::__private::FaultSpec {
            kind: #kind,
            target: #target,
            after_ms: #after_ms,
            duration_ms: #duration_ms,
            params: &[#(#params),*],
        }
    }
}

/// On error: the function as written, so that IDEs keep resolving it, and every error.
pub fn errors(item: TokenStream, errors: syn::Error) -> TokenStream {
    let errors = errors.into_compile_error();
    quote!(#errors #item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        let input = crate::parse::parse(args, item).unwrap();
        let test = crate::validate::validate(input).unwrap_or_else(|e| panic!("{e}"));
        render(test).to_string()
    }

    #[test]
    fn renders_the_spec_and_one_call() {
        let expanded = expand(
            quote!(
                fault = "latency",
                target = "postgres",
                latency = "100ms",
                recover_within = "10s"
            ),
            quote!(
                /// Docs.
                #[ignore]
                #[allow(unused)]
                pub async fn slow_db(run: ChaosRun) {
                    body(run);
                }
            ),
        );
        let expected = quote! {
            /// Docs.
            #[ignore]
            #[::core::prelude::v1::test]
            pub fn slow_db() {
                #[allow(unused)]
                async fn slow_db(run: ChaosRun) { body(run); }
                static __CHAOS_SPEC: ::chaos_runtime::__private::Spec = ::chaos_runtime::__private::Spec {
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(slow_db)),
                    fn_name: ::core::stringify!(slow_db),
                    file: ::core::file!(),
                    manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                    faults: &[::chaos_runtime::__private::FaultSpec {
                        kind: "latency",
                        target: "postgres",
                        after_ms: 0,
                        duration_ms: 3000,
                        params: &[("latency_ms", "100")],
                    }],
                    recover_within_ms: 10000,
                    observer: ::std::option::Option::None,
                    workload: ::std::option::Option::None,
                    snapshot: true,
                    system: system,
                    steady: ::chaos_runtime::__private::SteadySpec {
                        ok_ratio: ::std::option::Option::None,
                        p99_ms: ::std::option::Option::None,
                        window_ms: ::std::option::Option::None,
                    },
                };
                ::chaos_runtime::__private::run(
                    &__CHAOS_SPEC,
                    ::std::boxed::Box::new(|run: ::chaos_runtime::ChaosRun| ::std::boxed::Box::pin(slow_db(run)))
                );
            }
        };
        assert_eq!(expanded, expected.to_string());
    }

    #[test]
    fn zero_argument_bodies_ignore_the_run() {
        let expanded = expand(
            quote!(
                faults(
                    kill(target = "redis"),
                    pause(target = "postgres", after = "1s", duration = "2s")
                ),
                recover_within = "10s",
                observer = "bpf",
                snapshot = false
            ),
            quote!(
                async fn cascade() {}
            ),
        );
        let faults = quote! {
            faults: &[
                ::chaos_runtime::__private::FaultSpec { kind: "kill", target: "redis", after_ms: 0, duration_ms: 3000, params: &[], },
                ::chaos_runtime::__private::FaultSpec { kind: "pause", target: "postgres", after_ms: 1000, duration_ms: 2000, params: &[], }
            ],
        };
        assert!(expanded.contains(&faults.to_string()), "{expanded}");
        assert!(
            expanded.contains(&quote!(observer: ::std::option::Option::Some("bpf")).to_string())
        );
        assert!(expanded.contains(&quote!(snapshot: false).to_string()));
        let body = quote!(|_run: ::chaos_runtime::ChaosRun| ::std::boxed::Box::pin(cascade()));
        assert!(expanded.contains(&body.to_string()), "{expanded}");
    }

    #[test]
    fn errors_keep_the_function() {
        let item = quote!(
            async fn t(run: ChaosRun) {}
        );
        let error = syn::Error::new(proc_macro2::Span::call_site(), "boom");
        let out = errors(item.clone(), error).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
    }
}
