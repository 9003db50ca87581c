//! The expansion: a `#[test]` that hands the user's function, kept whole, to the runtime.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ItemFn, ReturnType, Type};

use super::args::{Args, E2e};

/// Attributes that say something about the test rather than the function: they go on the
/// generated `#[test]`, where libtest and rustdoc read them (`cfg_attr` too: it usually
/// wraps `ignore`). Every other attribute
/// (`#[track_caller]`, `#[tracing::instrument]`, lints) stays on the user's function.
fn is_test_only(attr: &Attribute) -> bool {
    ["ignore", "should_panic", "doc", "cfg", "cfg_attr"]
        .iter()
        .any(|name| attr.path().is_ident(name))
}

pub(super) fn test(args: &Args, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let (test_attrs, body_attrs): (Vec<Attribute>, Vec<Attribute>) =
        attrs.into_iter().partition(is_test_only);
    let name = &sig.ident;
    let service = &args.service;
    let timeout = match args.guest_timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let e2e = match args.e2e {
        E2e::Both => quote!(Both),
        E2e::Never => quote!(Never),
        E2e::Only => quote!(Only),
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
    // Likewise the return type (a type that cannot be named in a const, `impl Trait`, is
    // left to the runner's own bound).
    let output_check = match &sig.output {
        ReturnType::Type(_, ty) if !matches!(**ty, Type::ImplTrait(_)) => {
            quote_spanned! {ty.span()=>
                const _: () = ::edge_test::__private::assert_test_output::<#ty>();
            }
        }
        _ => quote!(),
    };
    // The user's function is kept whole under its own name, inside the test (so insta
    // names snapshots after the test).
    quote! {
        #type_check
        #output_check
        #(#test_attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() {
            #(#body_attrs)*
            #sig #block
            ::edge_test::__private::#runner(
                ::edge_test::__private::TestMeta {
                    service: #service,
                    name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                    guest_timeout_ms: #timeout,
                    e2e: ::edge_test::__private::E2e::#e2e,
                },
                #name,
            );
        }
    }
}
