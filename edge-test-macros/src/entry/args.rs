//! The attribute's arguments: `service = "name"`, `guest_timeout_ms = N` and
//! `e2e = false | "only"`, one setter per key, each rejecting its own mistakes at their span.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, MetaNameValue, Token};

const VALID_KEYS: &str =
    "`service = \"name\"`, `guest_timeout_ms = <milliseconds>` and `e2e = false | \"only\"`";

/// Where the test runs: locally and against a deployment (the default), or only one of them.
#[derive(Clone, Copy, Default)]
pub(super) enum E2e {
    #[default]
    Both,
    Never,
    Only,
}

pub(super) struct Args {
    pub service: LitStr,
    pub guest_timeout_ms: Option<u64>,
    pub e2e: E2e,
}

/// What has been read so far; `None` for a key not given (yet).
#[derive(Default)]
struct Builder {
    service: Option<LitStr>,
    guest_timeout_ms: Option<u64>,
    e2e: E2e,
    /// Keys already given, so that a repeated one is reported once, at its second place.
    seen: Vec<String>,
}

impl Args {
    pub(super) fn parse(args: TokenStream, errors: &mut Vec<syn::Error>) -> Option<Args> {
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
        let mut builder = Builder::default();
        for meta in metas {
            let Meta::NameValue(pair) = &meta else {
                errors.push(syn::Error::new(
                    meta.span(),
                    format!("expected `key = value`; valid keys are {VALID_KEYS}"),
                ));
                continue;
            };
            if let Err(error) = builder.set(pair) {
                errors.push(error);
            }
        }
        builder.finish(&args, errors)
    }
}

impl Builder {
    fn set(&mut self, pair: &MetaNameValue) -> syn::Result<()> {
        let path = &pair.path;
        let key = quote!(#path).to_string().replace(' ', "");
        if self.seen.contains(&key) {
            return Err(syn::Error::new(
                path.span(),
                format!("`{key}` is given twice; keep one"),
            ));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "service" => self.set_service(&pair.value),
            "guest_timeout_ms" => self.set_guest_timeout_ms(&pair.value),
            "e2e" => self.set_e2e(&pair.value),
            _ => Err(syn::Error::new(
                path.span(),
                format!("unknown key `{key}`; valid keys are {VALID_KEYS}"),
            )),
        }
    }

    fn set_service(&mut self, value: &Expr) -> syn::Result<()> {
        match value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(name),
                ..
            }) if name.value().trim().is_empty() => Err(syn::Error::new(
                name.span(),
                "`service` is empty: name a service registered with `edge_test::register_service!`",
            )),
            Expr::Lit(ExprLit {
                lit: Lit::Str(name),
                ..
            }) => {
                self.service = Some(name.clone());
                Ok(())
            }
            other => Err(syn::Error::new(
                other.span(),
                "`service` takes a string literal: `service = \"todo\"`",
            )),
        }
    }

    fn set_guest_timeout_ms(&mut self, value: &Expr) -> syn::Result<()> {
        match value {
            Expr::Lit(ExprLit {
                lit: Lit::Int(ms), ..
            }) => match ms.base10_parse::<u64>() {
                Ok(0) | Err(_) => Err(syn::Error::new(
                    ms.span(),
                    "`guest_timeout_ms` takes a positive number of milliseconds",
                )),
                Ok(value) => {
                    self.guest_timeout_ms = Some(value);
                    Ok(())
                }
            },
            other => Err(syn::Error::new(
                other.span(),
                "`guest_timeout_ms` takes a number of milliseconds: `guest_timeout_ms = 2000`",
            )),
        }
    }

    fn set_e2e(&mut self, value: &Expr) -> syn::Result<()> {
        self.e2e = match value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) if b.value => E2e::Both,
            Expr::Lit(ExprLit {
                lit: Lit::Bool(_), ..
            }) => E2e::Never,
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) if s.value() == "only" => E2e::Only,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "`e2e` takes `false` (never against a deployment), `true` (the default: \
                     locally and against a deployment) or `\"only\"` (only against one)",
                ));
            }
        };
        Ok(())
    }

    fn finish(self, args: &TokenStream, errors: &mut Vec<syn::Error>) -> Option<Args> {
        match self.service {
            Some(service) => Some(Args {
                service,
                guest_timeout_ms: self.guest_timeout_ms,
                e2e: self.e2e,
            }),
            None => {
                // Only when nothing else is wrong: a misspelt `service` already said so.
                if errors.is_empty() {
                    errors.push(syn::Error::new(
                        if args.is_empty() {
                            Span::call_site()
                        } else {
                            args.span()
                        },
                        "missing `service`: write #[edge_test(service = \"name\")] with a \
                         service registered by `edge_test::register_service!`",
                    ));
                }
                None
            }
        }
    }
}
