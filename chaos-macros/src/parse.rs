//! Syntax only: the attribute's tokens as a tree of options, and the function it is on.
//!
//! Meaning (which keys exist, what values they take) is `validate`'s business, so that one
//! pass can report every mistake at once.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, ItemFn, Token, parenthesized, token};

/// What `#[chaos_test(ARGS)] ITEM` was given.
pub struct Input {
    /// The options, or the syntax errors that stopped reading them.
    pub args: syn::Result<Vec<Arg>>,
    /// The test function.
    pub func: ItemFn,
}

/// One option: `key`, `key = value` or `key(..)`.
pub struct Arg {
    pub key: Ident,
    pub value: Value,
}

/// What follows an option's key.
pub enum Value {
    /// Nothing: `key`.
    Flag,
    /// `key = expr`.
    Expr(Expr),
    /// `key(..)`: nested options, read the same way (`faults(kill(target = ".."))`).
    List(Vec<Arg>),
}

/// Reads the attribute and the item. Fails only when the item is not a function.
pub fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Input> {
    let func = syn::parse2::<ItemFn>(item).map_err(|_| {
        syn::Error::new(
            Span::call_site(),
            "#[chaos_test] goes on an `async fn`: `async fn name(run: ChaosRun) { .. }`",
        )
    })?;
    Ok(Input {
        args: parse_args(args),
        func,
    })
}

/// `a = "..", b(..), c`: comma-separated, a trailing comma allowed.
pub fn parse_args(tokens: TokenStream) -> syn::Result<Vec<Arg>> {
    let args = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(args.into_iter().collect())
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = input.call(Ident::parse_any).map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected an option name, like `fault` or `recover_within`",
            )
        })?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Value::Expr(input.parse()?)
        } else if input.peek(token::Paren) {
            let inner;
            parenthesized!(inner in input);
            Value::List(
                Punctuated::<Arg, Token![,]>::parse_terminated(&inner)?
                    .into_iter()
                    .collect(),
            )
        } else if input.is_empty() || input.peek(Token![,]) {
            Value::Flag
        } else if input.peek(Token![::]) {
            return Err(input.error(format!(
                "expected an option name, like `fault` or `recover_within`, not a path: `{key}::..`"
            )));
        } else {
            return Err(input.error(format!(
                "expected `=` after `{key}`, like `{key} = \"..\"`, or a `,` before the next option"
            )));
        };
        Ok(Arg { key, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn keys(args: &[Arg]) -> Vec<String> {
        args.iter().map(|a| a.key.to_string()).collect()
    }

    #[test]
    fn reads_flat_and_nested_options() {
        let args = parse_args(quote! {
            faults(kill(target = "redis"), pause(target = "postgres", after = "1s")),
            recover_within = "10s",
            snapshot = false,
            flag,
        })
        .unwrap();
        assert_eq!(
            keys(&args),
            ["faults", "recover_within", "snapshot", "flag"]
        );
        let Value::List(faults) = &args[0].value else {
            panic!("faults is a list")
        };
        assert_eq!(keys(faults), ["kill", "pause"]);
        let Value::List(pause) = &faults[1].value else {
            panic!("pause is a list")
        };
        assert_eq!(keys(pause), ["target", "after"]);
        assert!(matches!(args[2].value, Value::Expr(_)));
        assert!(matches!(args[3].value, Value::Flag));
    }

    #[test]
    fn empty_attribute_is_no_options() {
        assert!(parse_args(quote! {}).unwrap().is_empty());
    }

    fn error(tokens: TokenStream) -> String {
        match parse_args(tokens) {
            Ok(_) => panic!("expected a syntax error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn paths_are_not_keys() {
        assert!(error(quote! { a::b = "x" }).contains("not a path: `a::..`"));
    }

    #[test]
    fn keywords_are_read_as_keys() {
        // Refused later as unknown options, with the list of valid ones.
        let args = parse_args(quote! { type = "x" }).unwrap();
        assert_eq!(keys(&args), ["type"]);
    }

    #[test]
    fn syntax_errors_say_what_was_expected() {
        assert_eq!(
            error(quote! { fault "kill" }),
            "expected `=` after `fault`, like `fault = \"..\"`, or a `,` before the next option"
        );
        assert_eq!(
            error(quote! { "kill" }),
            "expected an option name, like `fault` or `recover_within`"
        );
        assert!(parse_args(quote! { fault = }).is_err());
        assert!(parse_args(quote! { faults(kill(target "x")) }).is_err());
    }

    #[test]
    fn non_functions_are_refused() {
        let error = parse(quote! {}, quote! { struct S; }).err().unwrap();
        assert!(error.to_string().contains("async fn"));
    }
}
