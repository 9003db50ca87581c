//! parse -> check -> render for `#[edge_test]`, one module each. Every problem is collected
//! and reported at its own span; on error the function is still emitted, so editors keep
//! working.

mod args;
mod check;
mod render;

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

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
    let args = args::Args::parse(args, &mut errors);
    check::signature(&function, &mut errors);
    check::attributes(&function, &mut errors);
    match (args, errors.is_empty()) {
        (Some(args), true) => render::test(&args, function),
        _ => {
            let errors = errors.into_iter().map(|e| e.to_compile_error());
            quote! { #(#errors)* #function }
        }
    }
}
