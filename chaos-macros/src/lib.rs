//! The `#[chaos_test]` attribute of `chaos-runtime`: see [`macro@chaos_test`].
//!
//! A shim: the attribute reads its options (`parse`), checks them against the closed lists the
//! runtime accepts (`validate`, every mistake reported at once at its span) and renders plain
//! data plus one call to `chaos_runtime::__private::run` (`render`). All behaviour lives in
//! the runtime.

mod parse;
mod render;
mod validate;

use proc_macro::TokenStream;

#[doc = include_str!("chaos_test.md")]
#[proc_macro_attribute]
pub fn chaos_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match parse::parse(args.into(), item.clone()).and_then(validate::validate) {
        Ok(test) => render::render(test),
        Err(errors) => render::errors(item, errors),
    }
    .into()
}
