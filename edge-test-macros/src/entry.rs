//! parse -> check -> render for `#[edge_test]`. Every problem is collected and reported at
//! its own span; on error the function is still emitted, so editors keep working.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, Token};

const VALID_KEYS: &str = "`service = \"name\"` and `guest_timeout_ms = <milliseconds>`";

struct Args {
    service: LitStr,
    guest_timeout_ms: Option<u64>,
}

pub(crate) fn edge_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        // Not a function at all: say so, and give the item back untouched.
        Err(e) => {
            let error = syn::Error::new(
                e.span(),
                "#[edge_test] goes on a function: `async fn name(edge: Edge) { .. }`",
            )
            .to_compile_error();
            return quote! { #error #item };
        }
    };
    let mut errors = Vec::new();
    let args = parse_args(args, &mut errors);
    check_signature(&function, &mut errors);
    match (args, errors.is_empty()) {
        (Some(args), true) => render(&args, function),
        _ => {
            let errors = errors.into_iter().map(|e| e.to_compile_error());
            quote! { #(#errors)* #function }
        }
    }
}

fn parse_args(args: TokenStream, errors: &mut Vec<syn::Error>) -> Option<Args> {
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone()) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                format!("expected {VALID_KEYS}, e.g. #[edge_test(service = \"todo\")]"),
            ));
            return None;
        }
    };
    let mut service: Option<LitStr> = None;
    let mut guest_timeout_ms: Option<(u64, Span)> = None;
    for meta in metas {
        let Meta::NameValue(pair) = &meta else {
            errors.push(syn::Error::new(
                meta.span(),
                format!("expected `key = value`; valid keys are {VALID_KEYS}"),
            ));
            continue;
        };
        let key = pair
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "service" => {
                if service.is_some() {
                    errors.push(syn::Error::new(
                        pair.path.span(),
                        "`service` is given twice; keep one",
                    ));
                    continue;
                }
                match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(name),
                        ..
                    }) if name.value().trim().is_empty() => {
                        errors.push(syn::Error::new(name.span(), "`service` is empty: name a service registered with `edge_test::register_service!`"));
                    }
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(name),
                        ..
                    }) => service = Some(name.clone()),
                    other => errors.push(syn::Error::new(
                        other.span(),
                        "`service` takes a string literal: `service = \"todo\"`",
                    )),
                }
            }
            "guest_timeout_ms" => {
                if guest_timeout_ms.is_some() {
                    errors.push(syn::Error::new(
                        pair.path.span(),
                        "`guest_timeout_ms` is given twice; keep one",
                    ));
                    continue;
                }
                match &pair.value {
                    Expr::Lit(ExprLit { lit: Lit::Int(ms), .. }) => match ms.base10_parse::<u64>() {
                        Ok(0) | Err(_) => errors.push(syn::Error::new(ms.span(), "`guest_timeout_ms` takes a positive number of milliseconds")),
                        Ok(value) => guest_timeout_ms = Some((value, ms.span())),
                    },
                    other => errors.push(syn::Error::new(other.span(), "`guest_timeout_ms` takes a number of milliseconds: `guest_timeout_ms = 2000`")),
                }
            }
            _ => {
                let path = &pair.path;
                let key = quote!(#path).to_string().replace(' ', "");
                errors.push(syn::Error::new(
                    path.span(),
                    format!("unknown key `{key}`; valid keys are {VALID_KEYS}"),
                ));
            }
        }
    }
    match service {
        Some(service) => Some(Args {
            service,
            guest_timeout_ms: guest_timeout_ms.map(|(v, _)| v),
        }),
        None => {
            if errors.is_empty() {
                errors.push(syn::Error::new(
                    if args.is_empty() { Span::call_site() } else { args.span() },
                    "missing `service`: write #[edge_test(service = \"name\")] with a service registered by `edge_test::register_service!`",
                ));
            }
            None
        }
    }
}

fn check_signature(function: &ItemFn, errors: &mut Vec<syn::Error>) {
    let sig = &function.sig;
    let fix =
        "an #[edge_test] function takes exactly one argument, the runner: `fn name(edge: Edge)`";
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "an #[edge_test] function cannot be generic",
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span(),
            "an #[edge_test] function cannot be `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new(
            unsafety.span(),
            "an #[edge_test] function cannot be `unsafe`",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new(variadic.span(), fix));
    }
    match sig.inputs.len() {
        0 => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("{fix}; add `edge: Edge`"),
        )),
        1 => {
            if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
                errors.push(syn::Error::new(
                    receiver.span(),
                    format!("{fix}, not `self`"),
                ));
            }
        }
        _ => {
            let extra = sig.inputs.iter().nth(1).expect("more than one input");
            errors.push(syn::Error::new(
                extra.span(),
                format!("{fix}; remove the other arguments"),
            ));
        }
    }
    for attr in &function.attrs {
        if attr.path().is_ident("test")
            || attr
                .path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "test")
        {
            errors.push(syn::Error::new(
                attr.span(),
                "remove this attribute: #[edge_test] already makes the function a test",
            ));
        }
    }
}

fn render(args: &Args, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &sig.ident;
    let service = &args.service;
    let timeout = match args.guest_timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let runner = if sig.asyncness.is_some() {
        quote!(run_async)
    } else {
        quote!(run_sync)
    };
    // The argument's type is checked where the user wrote it, so a wrong type is reported
    // on that type rather than inside the expansion; outside the #[test] function, so the
    // check also runs in builds where #[test] items are compiled out.
    let arg_ty = match sig.inputs.first() {
        Some(FnArg::Typed(arg)) => &arg.ty,
        _ => unreachable!("checked: one typed argument"),
    };
    let type_check = quote_spanned! {arg_ty.span()=>
        const _: () = ::edge_test::__private::assert_is_edge::<#arg_ty>();
    };
    // The user's function is kept whole under its own name (so insta names snapshots after
    // the test); test-only attributes (#[ignore], #[should_panic], docs, cfgs) move to the
    // generated #[test].
    quote! {
        #type_check
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() {
            #sig #block
            ::edge_test::__private::#runner(
                ::edge_test::__private::TestMeta {
                    service: #service,
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    guest_timeout_ms: #timeout,
                },
                #name,
            );
        }
    }
}
