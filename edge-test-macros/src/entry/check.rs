//! What the function must be for the runner to call it: checked on its signature, never on
//! types (the runtime's traits do that, with their own diagnostics).

use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

const ONE_ARGUMENT: &str =
    "an #[edge_test] function takes exactly one argument, the runner: `fn name(edge: Edge)`";

pub(super) fn signature(function: &ItemFn, errors: &mut Vec<syn::Error>) {
    let sig = &function.sig;
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
        errors.push(syn::Error::new(variadic.span(), ONE_ARGUMENT));
    }
    match sig.inputs.len() {
        0 => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("{ONE_ARGUMENT}; add `edge: Edge`"),
        )),
        1 => {
            if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
                errors.push(syn::Error::new(
                    receiver.span(),
                    format!("{ONE_ARGUMENT}, not `self`"),
                ));
            }
        }
        _ => {
            let extra = sig.inputs.iter().nth(1).expect("more than one input");
            errors.push(syn::Error::new(
                extra.span(),
                format!("{ONE_ARGUMENT}; remove the other arguments"),
            ));
        }
    }
}

pub(super) fn attributes(function: &ItemFn, errors: &mut Vec<syn::Error>) {
    for attr in &function.attrs {
        let is_test = attr
            .path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "test");
        if is_test {
            errors.push(syn::Error::new(
                attr.span(),
                "remove this attribute: #[edge_test] already makes the function a test",
            ));
        }
    }
}
