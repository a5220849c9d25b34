//! Meaning: checks the options and the signature, normalises values, and collects every
//! mistake, each at the span of the token that is wrong.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Attribute, Expr, FnArg, ItemFn, Lit, LitStr, ReturnType, Type};

use crate::parse::{Arg, Input, Value};
use chaos_spec::suggest::{did_you_mean, listing, unknown};
use chaos_spec::units::{self, DURATION_FORMS, Invalid, SIZE_FORMS};
use chaos_spec::{
    self as lists, DIRECTIONS, FAULT_KINDS, METHODS, OBSERVERS, ParamType, all_params,
    faults_taking, param_type, params_of, required_params, valid_role,
};

/// A checked test, ready to render.
pub struct Test {
    /// The user's function, less the attributes moved to the `#[test]` fn.
    pub func: ItemFn,
    /// `#[ignore]`, `#[should_panic]` and doc attributes, for the `#[test]` fn.
    pub test_attrs: Vec<Attribute>,
    /// Whether the function takes the `ChaosRun`.
    pub takes_run: bool,
    pub faults: Vec<Fault>,
    pub recover_within_ms: u64,
    pub observer: Option<String>,
    pub workload: Option<String>,
    pub snapshot: bool,
    /// `system = path`: the function that declares the system; `None`: `system` at the call site.
    pub system: Option<syn::Path>,
    pub steady: Steady,
}

/// Per-test overrides of the system's steady-state hypothesis.
#[derive(Default)]
pub struct Steady {
    /// `steady_ok_ratio = "0.99"`, as written (checked to be in (0, 1]).
    pub ok_ratio: Option<String>,
    /// `steady_p99 = "200ms"`: a fixed latency ceiling, ms.
    pub p99_ms: Option<u64>,
    /// `steady_window = "1s"`: how long the hypothesis must hold, ms.
    pub window_ms: Option<u64>,
}

/// One checked fault: mirrors `chaos_runtime::__private::FaultSpec`.
pub struct Fault {
    pub kind: &'static str,
    pub target: String,
    pub after_ms: u64,
    pub duration_ms: u64,
    /// Normalised: `(key, value)` as the runtime reads them.
    pub params: Vec<(String, String)>,
}

/// Options of the whole test; the others configure a fault.
const TEST_KEYS: &[&str] = &[
    "fault",
    "faults",
    "target",
    "duration",
    "recover_within",
    "observer",
    "workload",
    "snapshot",
    "system",
    "steady_ok_ratio",
    "steady_p99",
    "steady_window",
];

/// Keys every fault takes, inside `faults(KIND(..))`.
const FAULT_KEYS: &[&str] = &["target", "duration", "after"];

/// `duration` when not given, ms.
const DEFAULT_DURATION_MS: u64 = 3_000;

/// Every error, combined into one `syn::Error` (each keeps its span).
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }
}

/// Checks everything; `Err` holds every mistake found.
pub fn validate(input: Input) -> syn::Result<Test> {
    let mut errors = Errors::default();
    let Input { args, mut func } = input;
    // In source order: the attribute, the other attributes, the signature.
    let options = match args {
        Ok(args) => options(&args, &mut errors),
        Err(syntax) => {
            errors.push(syntax);
            None
        }
    };
    let test_attrs = split_attrs(&mut func, &mut errors);
    let takes_run = signature(&func, &mut errors);
    match (errors.0, options) {
        (Some(errors), _) => Err(errors),
        (None, Some(options)) => Ok(Test {
            func,
            test_attrs,
            takes_run,
            faults: options.faults,
            recover_within_ms: options.recover_within_ms,
            observer: options.observer,
            workload: options.workload,
            snapshot: options.snapshot,
            system: options.system,
            steady: options.steady,
        }),
        // Every path that yields no options has pushed an error.
        (None, None) => Err(syn::Error::new(
            Span::call_site(),
            "#[chaos_test] refused its options without saying why: this is a bug of chaos-macros, please report it",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The function

/// Checks the signature; returns whether the function takes the `ChaosRun`.
fn signature(func: &ItemFn, errors: &mut Errors) -> bool {
    let sig = &func.sig;
    if let Some(constness) = &sig.constness {
        errors.at(constness.span, "#[chaos_test] functions cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety.span, "#[chaos_test] functions cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "#[chaos_test] functions cannot be `extern`");
    }
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "#[chaos_test] functions must be `async fn`",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "#[chaos_test] functions cannot be generic: the runtime calls them with a `ChaosRun` only",
        );
    }
    let takes_run = match sig.inputs.first() {
        None => false,
        Some(FnArg::Receiver(receiver)) => {
            errors.spanned(
                receiver,
                "#[chaos_test] functions cannot take `self`: write a free `async fn`",
            );
            true
        }
        Some(FnArg::Typed(arg)) => {
            if !is_chaos_run(&arg.ty) {
                errors.spanned(
                    &arg.ty,
                    "the argument of a #[chaos_test] function must be `ChaosRun`, taken by value: `run: ChaosRun`",
                );
            }
            true
        }
    };
    for extra in sig.inputs.iter().skip(1) {
        errors.spanned(
            extra,
            "#[chaos_test] functions take at most one argument, `run: ChaosRun`",
        );
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && !matches!(&**ty, Type::Tuple(unit) if unit.elems.is_empty())
    {
        errors.spanned(
            ty,
            "#[chaos_test] functions must return `()`: assert in the body instead of returning a value",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause
        && sig.generics.params.is_empty()
    {
        errors.spanned(
            where_clause,
            "#[chaos_test] functions cannot have a `where` clause",
        );
    }
    takes_run
}

/// `ChaosRun`, `chaos_runtime::ChaosRun` or `::chaos_runtime::ChaosRun`.
fn is_chaos_run(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let last = path.path.segments.last();
    path.qself.is_none() && last.is_some_and(|s| s.ident == "ChaosRun" && s.arguments.is_none())
}

/// Moves `#[ignore]`, `#[should_panic]` and docs out of `func`; refuses a second test attribute.
fn split_attrs(func: &mut ItemFn, errors: &mut Errors) -> Vec<Attribute> {
    let mut test_attrs = Vec::new();
    let mut kept = Vec::new();
    for attr in func.attrs.drain(..) {
        let path = attr.path();
        let last = path.segments.last().map(|s| s.ident.to_string());
        if path.is_ident("ignore") || path.is_ident("should_panic") || path.is_ident("doc") {
            test_attrs.push(attr);
            continue;
        }
        match last.as_deref() {
            Some("test") => {
                let written = path.to_token_stream().to_string().replace(' ', "");
                errors.spanned(
                    &attr,
                    format!(
                        "remove `#[{written}]`: #[chaos_test] already generates the `#[test]` fn and runs the body itself"
                    ),
                );
            }
            Some("chaos_test") => {
                errors.spanned(
                    &attr,
                    "#[chaos_test] is given twice: merge the options into one attribute",
                );
            }
            _ => {}
        }
        kept.push(attr);
    }
    func.attrs = kept;
    test_attrs
}

// ---------------------------------------------------------------------------------------------
// The options

struct Options {
    faults: Vec<Fault>,
    recover_within_ms: u64,
    observer: Option<String>,
    workload: Option<String>,
    snapshot: bool,
    system: Option<syn::Path>,
    steady: Steady,
}

/// The keys of one level of the attribute: those set, and those guessed for unknown keys.
#[derive(Default)]
struct Keys {
    seen: Vec<String>,
    /// What unknown keys were taken for: a "missing" error for these would repeat the typo's.
    guessed: Vec<&'static str>,
}

impl Keys {
    /// Records `arg`'s key; `false`, and an error, if it is already set.
    fn first(&mut self, arg: &Arg, errors: &mut Errors) -> bool {
        let key = arg.key.to_string();
        if self.seen.contains(&key) {
            errors.at(
                arg.key.span(),
                format_args!("duplicate option `{key}`: it is already set earlier; keep one"),
            );
            return false;
        }
        self.seen.push(key);
        true
    }

    /// Reports an unknown key, remembering what it was taken for.
    fn unknown(&mut self, arg: &Arg, valid: &[&'static str], message: String, errors: &mut Errors) {
        if let Some(guess) = did_you_mean(&arg.key.to_string(), valid) {
            self.guessed.push(guess);
        }
        errors.at(arg.key.span(), message);
    }

    /// Neither set nor the likely meaning of an unknown key.
    fn missing(&self, key: &str) -> bool {
        !self.seen.iter().any(|k| k == key) && !self.guessed.contains(&key)
    }
}

/// The attribute's top level, in source order.
fn options(args: &[Arg], errors: &mut Errors) -> Option<Options> {
    let several = args.iter().any(|a| a.key == "faults");
    let single_kind = args
        .iter()
        .find(|a| a.key == "fault")
        .and_then(literal)
        .and_then(|lit| {
            let value = lit.value();
            FAULT_KINDS.iter().copied().find(|k| *k == value)
        });
    let mut top_level: Vec<&'static str> = TEST_KEYS.to_vec();
    top_level.extend(all_params());

    let mut keys = Keys::default();
    let mut single = FaultBuilder::new(single_kind);
    let mut valid = true;
    let mut faults = Vec::new();
    let mut recover_within_ms = 0;
    let mut observer = None;
    let mut workload = None;
    let mut snapshot = true;
    let mut system = None;
    let mut steady = Steady::default();
    for arg in args {
        let key = arg.key.to_string();
        let known = top_level.contains(&key.as_str()) || key == "after";
        if !known {
            keys.unknown(arg, &top_level, unknown_option(&key), errors);
            continue;
        }
        if !keys.first(arg, errors) {
            continue;
        }
        let checked = match key.as_str() {
            "recover_within" => recover_within(arg, errors).map(|ms| recover_within_ms = ms),
            "observer" => one_of(arg, "observer", OBSERVERS, errors).map(|o| observer = Some(o)),
            "workload" => name(arg, "workload", errors).map(|w| workload = Some(w)),
            "system" => system_path(arg, errors).map(|p| system = Some(p)),
            "steady_ok_ratio" => ok_ratio(arg, errors).map(|r| steady.ok_ratio = Some(r)),
            "steady_p99" => positive_duration(arg, errors).map(|ms| steady.p99_ms = Some(ms)),
            "steady_window" => positive_duration(arg, errors).map(|ms| steady.window_ms = Some(ms)),
            "snapshot" => boolean(arg, errors).map(|b| snapshot = b),
            "faults" => composite(arg, errors).map(|f| faults = f),
            "after" => {
                let message = if several {
                    r#"`after` is set per fault: put it inside the fault it delays, e.g. `faults(kill(..), pause(.., after = "1s"))`"#
                } else {
                    "`after` applies only inside `faults(..)`, where it delays a fault relative to the first one; a single fault is injected right away"
                };
                errors.at(arg.key.span(), message);
                None
            }
            "fault" if several => {
                let kind = single_kind.unwrap_or("KIND");
                errors.at(
                    arg.key.span(),
                    format_args!(
                        "`fault` conflicts with `faults(..)`: give one fault with `fault`, or several with `faults(..)`; to keep this one, add `{kind}(target = \"..\")` to `faults(..)`"
                    ),
                );
                None
            }
            "fault" => string(arg, errors)
                .and_then(|lit| fault_kind(&lit.value(), lit.span(), errors))
                .map(drop),
            "target" | "duration" if several => {
                errors.at(
                    arg.key.span(),
                    format_args!(
                        "`{key}` conflicts with `faults(..)`: set it on each fault inside, e.g. `faults(kill({key} = \"..\"))`"
                    ),
                );
                None
            }
            _ if several => {
                errors.at(
                    arg.key.span(),
                    format_args!(
                        "`{key}` conflicts with `faults(..)`: set it on the fault it configures, inside `faults(..)`"
                    ),
                );
                None
            }
            _ => single.set(arg, errors),
        };
        valid &= checked.is_some();
    }

    if keys.missing("recover_within") {
        errors.at(
            Span::call_site(),
            r#"missing `recover_within`: the time the stack gets to reach steady state again after the fault heals, e.g. `recover_within = "10s"`"#,
        );
        valid = false;
    }
    if !several {
        // A misspelt `faults(..)` is no sign of a missing `fault` or `target`.
        let meant_faults = keys.guessed.contains(&"faults");
        if keys.missing("fault") && !meant_faults {
            errors.at(
                Span::call_site(),
                r#"missing `fault`: the fault to inject, e.g. `fault = "kill"` (or several with `faults(..)`)"#,
            );
        }
        if keys.missing("target") && !meant_faults {
            errors.at(
                Span::call_site(),
                r#"missing `target`: the role of the system the fault hits, e.g. `target = "postgres"`"#,
            );
        }
        if let Some(kind) = single.kind {
            for p in required_params(kind) {
                if keys.missing(p) {
                    errors.at(Span::call_site(), missing_param(kind, p));
                    valid = false;
                }
            }
        }
        match single.finish() {
            Some(fault) => faults.push(fault),
            None => valid = false,
        }
    }
    valid.then(|| Options {
        faults,
        recover_within_ms,
        observer: observer.map(str::to_owned),
        workload,
        snapshot,
        system,
        steady,
    })
}

/// `unknown option `KEY`[, did you mean ..?]`, then the options and the fault parameters.
fn unknown_option(key: &str) -> String {
    let params = all_params();
    let mut valid = TEST_KEYS.to_vec();
    valid.extend(&params);
    let mut message = format!("unknown option `{key}`");
    if let Some(guess) = did_you_mean(key, &valid) {
        message += &format!(", did you mean `{guess}`?");
    }
    format!(
        "{message}\noptions: `fault` or `faults(..)`, `target`, `duration`, `recover_within`, `system`, `workload`, `observer`, `snapshot`, `steady_ok_ratio`, `steady_p99`, `steady_window`\nfault parameters: {}",
        listing(&params)
    )
}

/// `recover_within`: a duration greater than 0.
fn recover_within(arg: &Arg, errors: &mut Errors) -> Option<u64> {
    let ms = duration(arg, errors)?;
    if ms == 0 {
        errors.spanned(
            value_tokens(arg),
            "`recover_within` must be more than 0: it is the time the stack gets to reach steady state again after the fault heals",
        );
        return None;
    }
    Some(ms)
}

/// `faults(KIND(..), ..)`.
fn composite(list: &Arg, errors: &mut Errors) -> Option<Vec<Fault>> {
    let example = r#"`faults(kill(target = "redis"), pause(target = "postgres", after = "1s"))`"#;
    let items = match &list.value {
        Value::List(items) if !items.is_empty() => items,
        Value::List(_) => {
            errors.at(
                list.key.span(),
                format_args!("`faults(..)` is empty: list at least one fault, e.g. {example}"),
            );
            return None;
        }
        _ => {
            errors.at(
                list.key.span(),
                format_args!("`faults` takes a list of faults: {example}"),
            );
            return None;
        }
    };
    let mut faults = Vec::new();
    let mut valid = true;
    for item in items {
        match composite_item(item, errors) {
            Some(fault) => faults.push(fault),
            None => valid = false,
        }
    }
    valid.then_some(faults)
}

/// `KIND(target = "..", ..)` inside `faults(..)`.
fn composite_item(item: &Arg, errors: &mut Errors) -> Option<Fault> {
    let name = item.key.to_string();
    let kind = fault_kind(&name, item.key.span(), errors);
    let Value::List(args) = &item.value else {
        errors.at(
            item.key.span(),
            format_args!("write each fault of `faults(..)` as `{name}(target = \"..\", ..)`"),
        );
        return None;
    };
    let mut keys = Keys::default();
    let mut fault = FaultBuilder::new(kind);
    for arg in args {
        let key = arg.key.to_string();
        if FAULT_KEYS.contains(&key.as_str()) || param_type(&key).is_some() {
            if keys.first(arg, errors) {
                fault.set(arg, errors);
            }
        } else if TEST_KEYS.contains(&key.as_str()) {
            errors.at(
                arg.key.span(),
                format_args!(
                    "`{key}` is an option of the whole test, not of one fault: move it out of `faults(..)`"
                ),
            );
        } else {
            let mut valid: Vec<&'static str> = FAULT_KEYS.to_vec();
            match kind.and_then(params_of) {
                Some(params) => valid.extend(params.iter().map(|(p, _)| *p)),
                None => valid.extend(all_params()),
            }
            let message = unknown("option", &key, &valid);
            keys.unknown(arg, &valid, message, errors);
        }
    }
    if keys.missing("target") {
        errors.at(
            item.key.span(),
            format_args!(
                "missing `target` for `{name}`: write `{name}(target = \"..\")` with a role of the system"
            ),
        );
    }
    let mut complete = true;
    if let Some(kind) = fault.kind {
        for p in required_params(kind) {
            if keys.missing(p) {
                errors.at(item.key.span(), missing_param(kind, p));
                complete = false;
            }
        }
    }
    fault.finish().filter(|_| complete)
}

/// The error for a parameter `kind` cannot do without.
fn missing_param(kind: &str, param: &str) -> String {
    let what = match param {
        "path" => {
            "the directory inside the target whose filesystem is filled, e.g. `path = \"/var/lib/postgresql/disk\"`"
        }
        "offset" => "how far the target's clock moves, e.g. `offset = \"+60m\"`",
        _ => "the process to signal, by part of its command line, e.g. `process = \"walwriter\"`",
    };
    format!("missing `{param}` for `{kind}`: {what}")
}

/// One fault's options, checked as they come.
struct FaultBuilder {
    /// The fault's kind; `None` when unknown or missing (reported where the kind is written).
    kind: Option<&'static str>,
    target: Option<String>,
    after_ms: u64,
    duration_ms: u64,
    params: Vec<(String, String)>,
    valid: bool,
}

impl FaultBuilder {
    fn new(kind: Option<&'static str>) -> Self {
        FaultBuilder {
            kind,
            target: None,
            after_ms: 0,
            duration_ms: DEFAULT_DURATION_MS,
            params: Vec::new(),
            valid: true,
        }
    }

    /// `target`, `duration`, `after` or a fault parameter. `None` if it is invalid.
    fn set(&mut self, arg: &Arg, errors: &mut Errors) -> Option<()> {
        let checked = match arg.key.to_string().as_str() {
            "target" => name(arg, "target", errors).map(|t| self.target = Some(t)),
            "duration" => duration(arg, errors).map(|ms| self.duration_ms = ms),
            "after" => duration(arg, errors).map(|ms| self.after_ms = ms),
            _ => self.param(arg, errors),
        };
        self.valid &= checked.is_some();
        checked
    }

    fn param(&mut self, arg: &Arg, errors: &mut Errors) -> Option<()> {
        let name = arg.key.to_string();
        if let Some(kind) = self.kind
            && let Some(taken) = params_of(kind)
            && !taken.iter().any(|(p, _)| *p == name)
        {
            let takes = if taken.is_empty() {
                format!("`{kind}` takes no parameters besides `target` and `duration`")
            } else {
                let names: Vec<&str> = taken.iter().map(|(p, _)| *p).collect();
                format!("its parameters are {}", listing(&names))
            };
            let owners = faults_taking(&name);
            let owners = match owners.as_slice() {
                [one] => format!("the fault `{one}`"),
                _ => format!("the faults {}", listing(&owners)),
            };
            errors.at(
                arg.key.span(),
                format_args!(
                    "fault `{kind}` does not take `{name}`: {takes}\n`{name}` belongs to {owners}"
                ),
            );
            return None;
        }
        let value = param(arg, errors)?;
        self.params.push(value);
        Some(())
    }

    /// The fault, if its kind, its target and every option are valid.
    fn finish(self) -> Option<Fault> {
        self.valid.then_some(())?;
        Some(Fault {
            kind: self.kind?,
            target: self.target?,
            after_ms: self.after_ms,
            duration_ms: self.duration_ms,
            params: self.params,
        })
    }
}

/// `name`, checked against `FAULT_KINDS`; reports at `span`.
fn fault_kind(name: &str, span: Span, errors: &mut Errors) -> Option<&'static str> {
    let found = FAULT_KINDS.iter().copied().find(|k| *k == name);
    if found.is_none() {
        errors.at(span, unknown("fault", name, FAULT_KINDS));
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Values

/// A fault parameter, normalised to `(key, value)`.
fn param(arg: &Arg, errors: &mut Errors) -> Option<(String, String)> {
    let name = arg.key.to_string();
    let ty = param_type(&name)?;
    let lit = string(arg, errors)?;
    let text = lit.value();
    match ty {
        ParamType::Duration => {
            let ms = parsed(
                &lit,
                &name,
                "duration",
                DURATION_FORMS,
                units::duration_ms(&text),
                errors,
            )?;
            Some((format!("{name}_ms"), ms.to_string()))
        }
        ParamType::Size => {
            let bytes = parsed(
                &lit,
                &name,
                "size",
                SIZE_FORMS,
                units::size_bytes(&text),
                errors,
            )?;
            if bytes == 0 {
                errors.at(
                    lit.span(),
                    format_args!("`{name}` must be more than 0 bytes"),
                );
                return None;
            }
            Some((format!("{name}_bytes"), bytes.to_string()))
        }
        ParamType::Float => {
            if units::is_positive_decimal(&text) {
                Some((name, text))
            } else {
                errors.at(
                    lit.span(),
                    format_args!(
                        r#"invalid number `{text}` for `{name}`: expected a decimal number greater than 0, like "0.5" or "2""#
                    ),
                );
                None
            }
        }
        ParamType::Percent => {
            let pct = parsed(
                &lit,
                &name,
                "percentage",
                units::PERCENT_FORMS,
                units::percent(&text),
                errors,
            )?;
            Some((format!("{name}_pct"), pct.to_string()))
        }
        ParamType::Direction => {
            if DIRECTIONS.contains(&text.as_str()) {
                Some((name, text))
            } else {
                errors.at(lit.span(), unknown("direction", &text, DIRECTIONS));
                None
            }
        }
        ParamType::Offset => {
            let ms = parsed(
                &lit,
                &name,
                "offset",
                r#"a sign, a whole number and a unit, like "+60m", "-30s" or "+500ms" (not zero)"#,
                units::offset_ms(&text),
                errors,
            )?;
            Some((format!("{name}_ms"), ms.to_string()))
        }
        ParamType::Status => {
            if units::http_status(&text).is_some() {
                Some((name, text))
            } else {
                errors.at(
                    lit.span(),
                    format_args!(
                        r#"invalid status `{text}` for `{name}`: expected an HTTP status from 100 to 599, like "503""#
                    ),
                );
                None
            }
        }
        ParamType::Method => {
            if METHODS.contains(&text.as_str()) {
                Some((name, text))
            } else {
                errors.at(lit.span(), unknown("method", &text, METHODS));
                None
            }
        }
        ParamType::Path => {
            if units::is_path_prefix(&text) {
                Some((name, text))
            } else {
                errors.at(
                    lit.span(),
                    format_args!(
                        r#"invalid path `{text}` for `{name}`: expected a path starting with `/`, without spaces or quotes, like "/orders" or "/var/lib/postgresql/disk""#
                    ),
                );
                None
            }
        }
        ParamType::Process => {
            if units::is_process_pattern(&text) {
                Some((name, text))
            } else {
                errors.at(
                    lit.span(),
                    format_args!(
                        r#"invalid process `{text}` for `{name}`: expected part of the process's command line, 1-64 printable characters without quotes, like "walwriter""#
                    ),
                );
                None
            }
        }
    }
}

/// A duration option (`duration`, `after`, `recover_within`), in ms.
fn duration(arg: &Arg, errors: &mut Errors) -> Option<u64> {
    let lit = string(arg, errors)?;
    let name = arg.key.to_string();
    parsed(
        &lit,
        &name,
        "duration",
        DURATION_FORMS,
        units::duration_ms(&lit.value()),
        errors,
    )
}

fn parsed<T>(
    lit: &LitStr,
    name: &str,
    what: &str,
    forms: &str,
    result: Result<T, Invalid>,
    errors: &mut Errors,
) -> Option<T> {
    let text = lit.value();
    match result {
        Ok(value) => Some(value),
        Err(Invalid::Syntax) => {
            errors.at(
                lit.span(),
                format_args!("invalid {what} `{text}` for `{name}`: write {forms}"),
            );
            None
        }
        Err(Invalid::TooLarge) => {
            errors.at(
                lit.span(),
                format_args!(
                    "{what} `{text}` for `{name}` is too large{}",
                    if what == "percentage" {
                        ": at most 100%"
                    } else {
                        ""
                    }
                ),
            );
            None
        }
    }
}

/// `target = ".."` or `workload = ".."`: a role or workload name of the system. Which names
/// exist is known only when the system is built, so the runtime checks that (before anything
/// starts, with a "did you mean"); here only the shape.
fn name(arg: &Arg, what: &str, errors: &mut Errors) -> Option<String> {
    let lit = string(arg, errors)?;
    let value = lit.value();
    if valid_role(&value) {
        return Some(value);
    }
    errors.at(
        lit.span(),
        format_args!(
            "`{what}` names a {} of the system: lowercase letters, digits, `-` and `_`, starting with a letter, at most 32 characters; `{value}` is not one",
            if what == "target" { "role" } else { "workload" }
        ),
    );
    None
}

/// `system = path::to::fn`: a function `fn() -> chaos_runtime::System` (rustc checks the type).
fn system_path(arg: &Arg, errors: &mut Errors) -> Option<syn::Path> {
    if let Value::Expr(Expr::Path(p)) = &arg.value
        && p.qself.is_none()
    {
        return Some(p.path.clone());
    }
    errors.spanned(
        value_tokens(arg),
        "`system` takes the path of a function that declares the system, without quotes: `system = my_app::system` (a `fn() -> chaos_runtime::System`)",
    );
    None
}

/// `steady_ok_ratio = "0.99"`: a decimal in (0, 1].
fn ok_ratio(arg: &Arg, errors: &mut Errors) -> Option<String> {
    let lit = string(arg, errors)?;
    let text = lit.value();
    match text.parse::<f64>() {
        Ok(r) if units::is_positive_decimal(&text) && r > 0.0 && r <= 1.0 => Some(text),
        _ => {
            errors.at(
                lit.span(),
                format_args!(
                    "`steady_ok_ratio` is the share of requests that must succeed, a decimal above 0 and at most 1, like \"0.99\"; `{text}` is not one"
                ),
            );
            None
        }
    }
}

/// A duration greater than 0.
fn positive_duration(arg: &Arg, errors: &mut Errors) -> Option<u64> {
    let ms = duration(arg, errors)?;
    if ms == 0 {
        errors.spanned(
            value_tokens(arg),
            format_args!("`{}` must be more than 0", arg.key),
        );
        return None;
    }
    Some(ms)
}

/// A string option whose value is one of `allowed`.
fn one_of(
    arg: &Arg,
    what: &str,
    allowed: &[&'static str],
    errors: &mut Errors,
) -> Option<&'static str> {
    let lit = string(arg, errors)?;
    let value = lit.value();
    let found = allowed.iter().copied().find(|a| *a == value);
    if found.is_none() {
        errors.at(lit.span(), unknown(what, &value, allowed));
    }
    found
}

/// `key = true | false`.
fn boolean(arg: &Arg, errors: &mut Errors) -> Option<bool> {
    if let Value::Expr(Expr::Lit(lit)) = &arg.value
        && let Lit::Bool(value) = &lit.lit
    {
        return Some(value.value);
    }
    let key = &arg.key;
    errors.spanned(
        value_tokens(arg),
        format_args!("`{key}` takes `true` or `false`, without quotes: `{key} = false`"),
    );
    None
}

/// `key = "text"`.
fn string(arg: &Arg, errors: &mut Errors) -> Option<LitStr> {
    if let Some(lit) = literal(arg) {
        return Some(lit.clone());
    }
    let key = &arg.key;
    errors.spanned(
        value_tokens(arg),
        format_args!(
            "`{key}` takes a string: `{key} = \"{}\"`",
            example(&key.to_string())
        ),
    );
    None
}

/// The string literal of `key = "text"`, if that is what `arg` is.
fn literal(arg: &Arg) -> Option<&LitStr> {
    match &arg.value {
        Value::Expr(Expr::Lit(lit)) => match &lit.lit {
            Lit::Str(value) => Some(value),
            _ => None,
        },
        _ => None,
    }
}

/// What to point at when a value has the wrong shape.
fn value_tokens(arg: &Arg) -> proc_macro2::TokenStream {
    match &arg.value {
        Value::Expr(expr) => expr.to_token_stream(),
        _ => arg.key.to_token_stream(),
    }
}

/// A value to show in "takes a string" errors.
fn example(key: &str) -> &'static str {
    match key {
        "fault" => "kill",
        "target" => "postgres",
        "duration" => "2s",
        "after" => "1s",
        "recover_within" => "10s",
        "observer" => "auto",
        "workload" => "orders",
        "steady_ok_ratio" => "0.99",
        "steady_p99" => "200ms",
        "steady_window" => "1s",
        _ => match lists::param_type(key) {
            Some(ParamType::Duration) => "100ms",
            Some(ParamType::Size) => "64MiB",
            Some(ParamType::Float) => "0.5",
            Some(ParamType::Direction) => "egress",
            Some(ParamType::Percent) => "10%",
            Some(ParamType::Process) => "walwriter",
            Some(ParamType::Status) => "503",
            Some(ParamType::Offset) => "+60m",
            Some(ParamType::Method) => "POST",
            Some(ParamType::Path) => "/orders",
            None => "..",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn check(args: TokenStream, item: TokenStream) -> Result<Test, Vec<String>> {
        let input = crate::parse::parse(args, item).map_err(|e| vec![e.to_string()])?;
        validate(input).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn test_fn() -> TokenStream {
        quote!(
            async fn t(run: ChaosRun) {}
        )
    }

    fn ok(args: TokenStream) -> Test {
        match check(args, test_fn()) {
            Ok(test) => test,
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    fn fail(args: TokenStream, item: TokenStream) -> Vec<String> {
        match check(args, item) {
            Ok(_) => panic!("expected errors"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn single_fault_with_defaults() {
        let test = ok(quote!(
            fault = "kill",
            target = "postgres",
            recover_within = "10s"
        ));
        assert_eq!(test.faults.len(), 1);
        let fault = &test.faults[0];
        assert_eq!((fault.kind, fault.target.as_str()), ("kill", "postgres"));
        assert_eq!((fault.after_ms, fault.duration_ms), (0, 3_000));
        assert!(fault.params.is_empty());
        assert_eq!(test.recover_within_ms, 10_000);
        assert_eq!(test.observer, None);
        assert_eq!(test.workload, None);
        assert!(test.system.is_none());
        assert!(test.snapshot);
        assert!(test.takes_run);
    }

    #[test]
    fn params_are_normalised() {
        let test = ok(quote!(
            fault = "latency",
            target = "postgres",
            latency = "100ms",
            jitter = "5ms",
            direction = "egress",
            duration = "2s",
            recover_within = "1m",
            observer = "bpf",
            workload = "reads",
            snapshot = false,
        ));
        let fault = &test.faults[0];
        assert_eq!(fault.duration_ms, 2_000);
        let params: Vec<(&str, &str)> = fault
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            params,
            [
                ("latency_ms", "100"),
                ("jitter_ms", "5"),
                ("direction", "egress")
            ]
        );
        assert_eq!(test.recover_within_ms, 60_000);
        assert_eq!(test.observer.as_deref(), Some("bpf"));
        assert_eq!(test.workload.as_deref(), Some("reads"));
        assert!(!test.snapshot);

        let memory = ok(quote!(
            fault = "memory_oom",
            target = "redis",
            memory_limit = "64MiB",
            recover_within = "5s"
        ));
        assert_eq!(
            memory.faults[0].params,
            [("memory_limit_bytes".to_owned(), (64u64 << 20).to_string())]
        );
        let cpu = ok(quote!(
            fault = "cpu_throttle",
            target = "orders",
            cpus = "0.5",
            recover_within = "5s"
        ));
        assert_eq!(
            cpu.faults[0].params,
            [("cpus".to_owned(), "0.5".to_owned())]
        );
        let disk = ok(quote!(
            fault = "disk_io",
            target = "postgres",
            write_bps = "1MB",
            recover_within = "5s"
        ));
        assert_eq!(
            disk.faults[0].params,
            [("write_bps_bytes".to_owned(), "1000000".to_owned())]
        );
    }

    #[test]
    fn composite_faults_in_order() {
        let test = ok(quote!(
            faults(
                kill(target = "redis"),
                network_partition(
                    target = "postgres",
                    after = "1s",
                    duration = "2s",
                    direction = "ingress"
                ),
            ),
            recover_within = "10s"
        ));
        let faults: Vec<_> = test
            .faults
            .iter()
            .map(|f| (f.kind, f.target.as_str(), f.after_ms, f.duration_ms))
            .collect();
        assert_eq!(
            faults,
            [
                ("kill", "redis", 0, 3_000),
                ("network_partition", "postgres", 1_000, 2_000)
            ]
        );
        assert_eq!(
            test.faults[1].params,
            [("direction".to_owned(), "ingress".to_owned())]
        );
    }

    #[test]
    fn every_mistake_is_reported() {
        let errors = fail(
            quote!(
                fault = "kil",
                target = "postgress",
                duration = "2 s",
                recover_whithin = "10s",
                target = "redis"
            ),
            quote!(
                fn t(run: ChaosRun, extra: u8) -> u8 {
                    0
                }
            ),
        );
        let firsts: Vec<&str> = errors.iter().map(|e| e.lines().next().unwrap()).collect();
        assert_eq!(
            firsts,
            [
                "unknown fault `kil`, did you mean `kill`?",
                "invalid duration `2 s` for `duration`: write a whole number and a unit, like \"500ms\", \"2s\" or \"1m\"",
                // No "missing `recover_within`": the typo is taken for it.
                "unknown option `recover_whithin`, did you mean `recover_within`?",
                "duplicate option `target`: it is already set earlier; keep one",
                "#[chaos_test] functions must be `async fn`",
                "#[chaos_test] functions take at most one argument, `run: ChaosRun`",
                "#[chaos_test] functions must return `()`: assert in the body instead of returning a value",
            ]
        );
    }

    #[test]
    fn missing_options() {
        let errors = fail(quote!(), test_fn());
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("missing `recover_within`"));
        assert!(errors[1].starts_with("missing `fault`"));
        assert!(errors[2].starts_with("missing `target`"));
    }

    #[test]
    fn conflicts_with_faults() {
        let errors = fail(
            quote!(
                fault = "kill",
                target = "redis",
                duration = "1s",
                after = "1s",
                latency = "5ms",
                faults(kill(target = "redis")),
                recover_within = "1s"
            ),
            test_fn(),
        );
        let firsts: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            firsts,
            [
                "`fault` conflicts with `faults(..)`",
                "`target` conflicts with `faults(..)`",
                "`duration` conflicts with `faults(..)`",
                "`after` is set per fault",
                "`latency` conflicts with `faults(..)`",
            ]
        );
    }

    #[test]
    fn param_on_the_wrong_fault() {
        let errors = fail(
            quote!(
                fault = "kill",
                target = "redis",
                latency = "100ms",
                recover_within = "1s"
            ),
            test_fn(),
        );
        assert_eq!(
            errors,
            [
                "fault `kill` does not take `latency`: `kill` takes no parameters besides `target` and `duration`\n`latency` belongs to the faults `http_delay`, `latency`"
            ]
        );
        let errors = errors_in_faults(quote!(cpu_throttle(target = "redis", direction = "both")));
        assert_eq!(
            errors,
            [
                "fault `cpu_throttle` does not take `direction`: its parameters are `cpus`\n`direction` belongs to the faults `network_partition`, `packet_loss`, `bandwidth`, `latency`"
            ]
        );
    }

    fn errors_in_faults(faults: TokenStream) -> Vec<String> {
        fail(quote!(faults(#faults), recover_within = "1s"), test_fn())
    }

    #[test]
    fn mistakes_inside_faults() {
        let errors = errors_in_faults(quote!(
            kil(target = "redis"),
            pause(
                target = "redis",
                recover_within = "1s",
                jiter = "1ms",
                target = "nginx"
            ),
            stop,
            latency(latency = "1"),
        ));
        let firsts: Vec<&str> = errors.iter().map(|e| e.lines().next().unwrap()).collect();
        assert_eq!(
            firsts,
            [
                "unknown fault `kil`, did you mean `kill`?",
                "`recover_within` is an option of the whole test, not of one fault: move it out of `faults(..)`",
                "unknown option `jiter`",
                "duplicate option `target`: it is already set earlier; keep one",
                "write each fault of `faults(..)` as `stop(target = \"..\", ..)`",
                "invalid duration `1` for `latency`: write a whole number and a unit, like \"500ms\", \"2s\" or \"1m\"",
                "missing `target` for `latency`: write `latency(target = \"..\")` with a role of the system",
            ]
        );
        assert_eq!(
            errors[2],
            "unknown option `jiter`\nexpected one of: `target`, `duration`, `after`"
        );
    }

    #[test]
    fn values_of_the_wrong_shape() {
        let errors = fail(
            quote!(
                fault = kill,
                target = "redis",
                recover_within = 10,
                snapshot = "false",
                observer = "ebpf",
                workload = "writes"
            ),
            test_fn(),
        );
        let firsts: Vec<&str> = errors.iter().map(|e| e.lines().next().unwrap()).collect();
        assert_eq!(
            firsts,
            [
                "`fault` takes a string: `fault = \"kill\"`",
                "`recover_within` takes a string: `recover_within = \"10s\"`",
                "`snapshot` takes `true` or `false`, without quotes: `snapshot = false`",
                "unknown observer `ebpf`, did you mean `bpf`?",
            ]
        );
    }

    #[test]
    fn zero_and_bad_values() {
        let errors = fail(
            quote!(
                fault = "memory_oom",
                target = "redis",
                memory_limit = "0",
                recover_within = "0s"
            ),
            test_fn(),
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(errors[0], "`memory_limit` must be more than 0 bytes");
        assert!(errors[1].starts_with("`recover_within` must be more than 0"));
        let errors = errors_in_faults(quote!(
            cpu_throttle(target = "redis", cpus = "-1"),
            disk_io(target = "redis", write_bps = "1 MB"),
            network_partition(target = "redis", direction = "in"),
        ));
        let firsts: Vec<&str> = errors.iter().map(|e| e.lines().next().unwrap()).collect();
        assert_eq!(
            firsts,
            [
                "invalid number `-1` for `cpus`: expected a decimal number greater than 0, like \"0.5\" or \"2\"",
                "invalid size `1 MB` for `write_bps`: write a whole number of bytes, or with a unit, like \"64MiB\", \"64MB\", \"512KiB\", \"1GiB\" or \"4096\"",
                "unknown direction `in`",
            ]
        );
    }

    #[test]
    fn signatures() {
        let args = quote!(fault = "kill", target = "redis", recover_within = "1s");
        let zero_arg = check(
            args.clone(),
            quote!(
                async fn t() {}
            ),
        )
        .ok()
        .unwrap();
        assert!(!zero_arg.takes_run);
        assert!(
            check(
                args.clone(),
                quote!(
                    async fn t(run: chaos_runtime::ChaosRun) -> () {}
                )
            )
            .is_ok()
        );
        let errors = fail(
            args.clone(),
            quote!(
                const unsafe extern "C" fn t<T>(run: &ChaosRun)
                where
                    T: Copy,
                {
                }
            ),
        );
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(
            errors[5].starts_with("the argument of a #[chaos_test] function must be `ChaosRun`")
        );
        let errors = fail(
            args,
            quote!(
                #[test]
                #[tokio::test]
                async fn t() {}
            ),
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[1].starts_with("remove `#[tokio::test]`"));
    }

    #[test]
    fn test_attributes_move_to_the_test_fn() {
        let test = check(
            quote!(fault = "kill", target = "redis", recover_within = "1s"),
            quote!(
                /// Docs.
                #[ignore = "needs docker"]
                #[should_panic]
                #[allow(unused)]
                async fn t(run: ChaosRun) {}
            ),
        )
        .ok()
        .unwrap();
        let moved: Vec<String> = test
            .test_attrs
            .iter()
            .map(|a| a.path().get_ident().unwrap().to_string())
            .collect();
        assert_eq!(moved, ["doc", "ignore", "should_panic"]);
        assert_eq!(test.func.attrs.len(), 1);
        assert!(test.func.attrs[0].path().is_ident("allow"));
    }
}
